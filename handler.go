package passwordless

import (
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// identityHeaders tell the upstream who the user is.
const (
	headerUserID     = "X-Auth-User-Id"
	headerUserEmail  = "X-Auth-User-Email"
	headerUserMobile = "X-Auth-User-Mobile"
	headerUserRoles  = "X-Auth-User-Roles"
	headerAssertion  = "X-Auth-Assertion"
)

var identityHeaders = []string{headerUserID, headerUserEmail, headerUserMobile, headerUserRoles, headerAssertion}

// dropIdentityHeaders removes what a client sent under the identity
// headers' names, so a backend can trust them. Spellings with underscores
// go too: CGI and WSGI backends read X_Auth_User_Id as the same header.
func dropIdentityHeaders(h http.Header) {
	for k := range h {
		switch len(k) {
		case len(headerUserID), len(headerUserEmail), len(headerUserMobile), len(headerAssertion): // Roles is as long as Email
			for _, name := range identityHeaders {
				if sameHeaderName(k, name) {
					delete(h, k)
				}
			}
		}
	}
}

// sameHeaderName compares header names as CGI does: case-insensitive,
// with '_' and '-' alike.
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ServeHTTP answers the endpoints under the prefix and guards the rest.
func (p *Passwordless) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	dropIdentityHeaders(r.Header)
	if r.Trailer != nil {
		// Trailers arrive with the end of the body and are forwarded with
		// it: they are scrubbed there, as the headers are here.
		r.Body = &trailerScrubber{ReadCloser: r.Body, r: r}
	}
	if !strings.HasPrefix(r.URL.Path, "/") {
		// A target that is not a path (`*`, or an absolute form without
		// one) matches no protect or public path, so no rule would judge
		// it: it is refused rather than passed on.
		writeError(w, badRequest("The request target must be a path."))
		return nil
	}
	if rest, ok := p.endpointPath(r.URL.Path); ok {
		if rest == "check" || strings.HasPrefix(rest, "check/") {
			p.serveCheck(w, r)
			return nil
		}
		p.serveEndpoint(w, r, rest)
		return nil
	}
	v := p.judge(r)
	switch v.kind {
	case signedOut:
		if loc, ok := p.signInURL(r, v.reason, true); ok {
			http.Redirect(w, r, loc, http.StatusFound)
			return nil
		}
		writeError(w, p.pages.localize(r, authFailure(v.reason)))
		return nil
	case forbidden:
		p.forbidden(w, r, v.st)
		return nil
	}
	dropSessionCookie(r.Header)
	if st := v.st; st != nil {
		// Who the user is comes from the session's current state, not
		// from the token's claims, which may be as old as the session.
		// The placeholders are answered when asked for, by one provider,
		// rather than put into the replacer's map on every request.
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Map(st.placeholder)
		setIdentity(r.Header, st)
	}
	if p.Assertion {
		a, e := p.assertion(r.Host, v.st)
		if e != nil {
			writeError(w, e)
			return nil
		}
		r.Header[headerAssertion] = []string{a}
	}
	return next.ServeHTTP(w, r)
}

// setIdentity tells who the user is in h, the request to the upstream or
// the answer of /check. The names are canonical already: no need for
// Header.Set's work.
func setIdentity(h http.Header, st *userState) {
	// One array holds the values, each header a full slice of one element
	// of it: one allocation per request, and an append to one header
	// cannot write into the next.
	vals := [4]string{st.userID, st.email, st.mobile, st.rolesHeader}
	all := vals[:]
	h[headerUserID] = all[0:1:1]
	if st.email != "" {
		h[headerUserEmail] = all[1:2:2]
	}
	if st.mobile != "" {
		h[headerUserMobile] = all[2:3:3]
	}
	if st.rolesHeader != "" {
		h[headerUserRoles] = all[3:4:4]
	}
}

// placeholder answers {http.auth.user.id}, .email, .mobile and .roles
// for the user of st.
func (st *userState) placeholder(key string) (any, bool) {
	switch key {
	case "http.auth.user.id":
		return st.userID, true
	case "http.auth.user.email":
		return st.email, true
	case "http.auth.user.mobile":
		return st.mobile, true
	case "http.auth.user.roles":
		return st.rolesHeader, true
	}
	return nil, false
}

// verdictKind is what protection decides about a request.
type verdictKind int

const (
	open      verdictKind = iota // not protected: public, outside protect, or a preflight
	allowed                      // signed in and let in by the rules
	signedOut                    // no valid credentials, or a cookie sent cross-site
	forbidden                    // signed in, refused by a rule
)

type verdict struct {
	kind   verdictKind
	st     *userState // allowed, forbidden
	reason string     // signedOut: reasonMissing, reasonInvalid, reasonRevoked or reasonCrossSite
}

// judge decides about a request as protection does, whether Caddy is to
// serve it next (ServeHTTP) or another proxy asks about it (/check):
// public and protect paths under every reading, the rules, and the
// credentials, by bearer or by the cookie this scheme reads.
func (p *Passwordless) judge(r *http.Request) verdict {
	if isPreflight(r) || !p.protects(r) {
		return verdict{kind: open}
	}
	claims, st, reason := p.authenticate(r)
	if claims == nil {
		// Anonymous traffic is normal: debug, not error, so it does not
		// flood the log.
		p.logger.Debug("request not authenticated", zap.String("reason", reason), zap.String("path", r.URL.Path))
		countProtected(refusedResult(reason))
		return verdict{kind: signedOut, reason: reason}
	}
	if !p.permitted(r, st) {
		p.logger.Debug("request not permitted", zap.String("user", st.userID), zap.String("path", r.URL.Path))
		countProtected(protectedForbidden)
		return verdict{kind: forbidden, st: st}
	}
	countProtected(protectedAllowed)
	return verdict{kind: allowed, st: st}
}

// trailerScrubber drops the identity headers from the request's trailers
// when the body ends, which is when net/http fills them in and before the
// proxy copies them upstream.
type trailerScrubber struct {
	io.ReadCloser
	r *http.Request
}

func (t *trailerScrubber) Read(b []byte) (int, error) {
	n, err := t.ReadCloser.Read(b)
	if err == io.EOF {
		dropIdentityHeaders(t.r.Trailer)
	}
	return n, err
}

// endpointPath reports whether path is under the prefix and returns the
// endpoint name, without the trailing slash drfpasswordless clients send.
func (p *Passwordless) endpointPath(path string) (string, bool) {
	if path != p.Prefix && !strings.HasPrefix(path, p.Prefix+"/") {
		return "", false
	}
	return strings.Trim(strings.TrimPrefix(path, p.Prefix), "/"), true
}

// endpoint maps the methods an endpoint answers to their handlers.
type endpoint map[string]func(w http.ResponseWriter, r *http.Request) *apiError

func post(f func(http.ResponseWriter, *http.Request) *apiError) endpoint {
	return endpoint{http.MethodPost: f}
}

func get(f func(http.ResponseWriter, *http.Request) *apiError) endpoint {
	return endpoint{http.MethodGet: f, http.MethodHead: f}
}

// endpoints maps endpoint names to their handlers; Provision builds it once.
func (p *Passwordless) endpoints() map[string]endpoint {
	m := map[string]endpoint{
		"token":      post(p.serveToken),
		"refresh":    post(p.serveRefresh),
		"logout":     post(p.serveLogout),
		"logout/all": post(p.serveLogoutAll),
		"me":         get(p.serveMe),
		"jwks.json":  get(p.serveJWKS),
		"verify":     post(p.serveVerify),
		"health":     get(p.serveHealth),
	}
	if _, ok := p.senders[KindEmail]; ok {
		m["email"] = post(p.serveSend(KindEmail))
		m["verify/email"] = post(p.serveSendVerify(KindEmail))
	}
	if _, ok := p.senders[KindMobile]; ok {
		m["mobile"] = post(p.serveSend(KindMobile))
		m["verify/mobile"] = post(p.serveSendVerify(KindMobile))
	}
	if len(p.senders) > 0 {
		m["login"] = endpoint{http.MethodGet: p.serveLoginPage, http.MethodHead: p.serveLoginPage, http.MethodPost: p.serveLoginForm}
	}
	p.passkeyRoutes(m)
	return m
}

// allow is the value of the Allow header for the endpoint.
func (ep endpoint) allow() string {
	methods := make([]string, 0, len(ep)+1)
	for m := range ep {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	return strings.Join(append(methods, http.MethodOptions), ", ")
}

func (p *Passwordless) serveEndpoint(w http.ResponseWriter, r *http.Request, name string) {
	ep, ok := p.routes[name]
	if !ok {
		ep, ok = p.passkeyItem(name)
	}
	if !ok {
		writeError(w, p.pages.localize(r, &apiError{status: http.StatusNotFound, detail: "Not found."}))
		return
	}
	serve, ok := ep[r.Method]
	switch {
	case r.Method == http.MethodOptions:
		w.Header().Set("Allow", ep.allow())
		w.WriteHeader(http.StatusNoContent)
		return
	case !ok:
		writeError(w, p.pages.localize(r, &apiError{status: http.StatusMethodNotAllowed, detail: "Method \"" + r.Method + "\" not allowed.", format: "Method \"%s\" not allowed.", args: []any{r.Method}, allow: ep.allow()}))
		return
	}
	if e := serve(w, r); e != nil {
		writeError(w, p.pages.localize(r, e))
	}
}

// internal logs a technical failure and answers 500 without its details.
func (p *Passwordless) internal(what string, err error) *apiError {
	p.logger.Error(what, zap.Error(err))
	return &apiError{status: http.StatusInternalServerError, detail: "Internal error. Please try again later."}
}
