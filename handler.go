package passwordless

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
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
		if v.reason != reasonCrossSite && wantsLoginPage(r) {
			if loc, ok := p.signInURL(r, true); ok {
				http.Redirect(w, r, loc, http.StatusFound)
				return nil
			}
		}
		writeError(w, authFailure(v.reason))
		return nil
	case forbidden:
		p.forbidden(w, r, v.st)
		return nil
	}
	dropSessionCookie(r.Header)
	if st := v.st; st != nil {
		// Who the user is comes from the session's current state, not
		// from the token's claims, which may be as old as the session.
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Set("http.auth.user.id", st.userID)
		repl.Set("http.auth.user.email", st.email)
		repl.Set("http.auth.user.mobile", st.mobile)
		repl.Set("http.auth.user.roles", st.rolesHeader)
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
	h[headerUserID] = []string{st.userID}
	if st.email != "" {
		h[headerUserEmail] = []string{st.email}
	}
	if st.mobile != "" {
		h[headerUserMobile] = []string{st.mobile}
	}
	if st.rolesHeader != "" {
		h[headerUserRoles] = []string{st.rolesHeader}
	}
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

// isPreflight reports whether r is a CORS preflight, which browsers send
// without credentials. Only a real one passes without a token: an OPTIONS
// request with a body, or without the preflight headers, is authenticated
// like any other, so it cannot carry data past the check.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.ContentLength == 0 && len(r.TransferEncoding) == 0 &&
		r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
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

// protects reports whether r needs a token: protect or a rule covers it
// and public does not. Backends do not all read a path alike (servlet
// containers cut ";params" and some servers take '\' for '/'), so a
// request is protected if any reading of its path is, and public only if
// every reading is.
func (p *Passwordless) protects(r *http.Request) bool {
	readings := pathReadings(r)
	if readings == nil {
		// The common path has one reading; the default, everything, needs
		// no matching.
		if !p.protectAll && !p.protect.Match(r) && p.ruleFor(r) == nil {
			return false
		}
		return len(p.public) == 0 || !p.public.Match(r)
	}
	if !p.protectAll && !matchAnyReading(p.protect, r, readings) && !p.anyRuleAnyReading(r, readings) {
		return false
	}
	return len(p.public) == 0 || !matchEveryReading(p.public, r, readings)
}

// pathReadings lists the ways a backend may read r's path: as decoded, as
// sent, with ";params" cut from each segment, with '\' as '/', and both.
// It is nil when the path has only the one reading, as nearly all do.
func pathReadings(r *http.Request) []string {
	decoded, raw := r.URL.Path, r.URL.EscapedPath()
	if !strings.ContainsAny(decoded, ";\\") && !strings.Contains(raw, "%") {
		return nil
	}
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, base := range []string{decoded, raw} {
		cut := cutPathParams(base)
		add(base)
		add(cut)
		add(strings.ReplaceAll(base, "\\", "/"))
		add(strings.ReplaceAll(cut, "\\", "/"))
	}
	return out
}

// cutPathParams removes ";params" from each segment, as servlet containers
// do: /static/..;/secret is /static/../secret to them.
func cutPathParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// withPath is r as if its path were path, for matching.
func withPath(r *http.Request, path string) *http.Request {
	r2 := *r
	u := *r.URL
	u.Path, u.RawPath = path, ""
	r2.URL = &u
	return &r2
}

func matchAnyReading(m caddyhttp.MatchPath, r *http.Request, readings []string) bool {
	for _, path := range readings {
		if m.Match(withPath(r, path)) {
			return true
		}
	}
	return false
}

func matchEveryReading(m caddyhttp.MatchPath, r *http.Request, readings []string) bool {
	for _, path := range readings {
		if !m.Match(withPath(r, path)) {
			return false
		}
	}
	return true
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
		writeError(w, &apiError{status: http.StatusNotFound, detail: "Not found."})
		return
	}
	serve, ok := ep[r.Method]
	switch {
	case r.Method == http.MethodOptions:
		w.Header().Set("Allow", ep.allow())
		w.WriteHeader(http.StatusNoContent)
		return
	case !ok:
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, detail: "Method \"" + r.Method + "\" not allowed.", allow: ep.allow()})
		return
	}
	if e := serve(w, r); e != nil {
		writeError(w, e)
	}
}

// aliasField reads the one alias field of a request: `email` or `mobile`.
func (p *Passwordless) aliasField(f map[string]string, kind AliasKind) (Alias, *apiError) {
	field := string(kind)
	v, ok := f[field]
	if !ok || strings.TrimSpace(v) == "" {
		return Alias{}, fieldError(field, "This field is required.")
	}
	var norm string
	var err error
	if kind == KindEmail {
		norm, err = normalizeEmail(v)
	} else {
		norm, err = normalizeMobile(v)
	}
	if err != nil {
		return Alias{}, fieldError(field, err.Error())
	}
	if kind == KindMobile && !p.allowedNumber(norm) {
		return Alias{}, fieldError(field, "Numbers in this country are not accepted. Allowed calling codes: "+strings.Join(p.SMS.AllowedCountryCodes, ", ")+".")
	}
	return Alias{Kind: kind, Value: norm}, nil
}

// exchangeFields reads the body of /token and /verify, one alias and a
// code, and refuses an alias that is locked out.
func (p *Passwordless) exchangeFields(w http.ResponseWriter, r *http.Request) (Alias, string, *apiError) {
	f, e := readFields(w, r, "email", "mobile", "token")
	if e != nil {
		return Alias{}, "", e
	}
	hasEmail, hasMobile := strings.TrimSpace(f["email"]) != "", strings.TrimSpace(f["mobile"]) != ""
	var kind AliasKind
	switch {
	case hasEmail && hasMobile:
		return Alias{}, "", badRequest("Give either an email address or a mobile number, not both.")
	case hasEmail:
		kind = KindEmail
	case hasMobile:
		kind = KindMobile
	default:
		return Alias{}, "", badRequest("Give an email address or a mobile number.")
	}
	if _, ok := p.senders[kind]; !ok {
		return Alias{}, "", fieldError(string(kind), "Login by "+string(kind)+" is not enabled.")
	}
	a, e := p.aliasField(f, kind)
	if e != nil {
		return Alias{}, "", e
	}
	code := strings.TrimSpace(f["token"])
	if code == "" {
		return Alias{}, "", fieldError("token", "This field is required.")
	}
	if !isDigits(code, p.CodeLength) {
		return Alias{}, "", fieldError("token", "The code is invalid or has expired.")
	}
	if e := p.checkLock(r, a); e != nil {
		return Alias{}, "", e
	}
	return a, code, nil
}

// sendFields reads the body of a send endpoint. drfpasswordless clients
// often send the other alias field empty or null; it is accepted only so.
func (p *Passwordless) sendFields(w http.ResponseWriter, r *http.Request, kind AliasKind) (map[string]string, *apiError) {
	f, e := readFields(w, r, string(KindEmail), string(KindMobile))
	if e != nil {
		return nil, e
	}
	other := KindMobile
	if kind == KindMobile {
		other = KindEmail
	}
	if strings.TrimSpace(f[string(other)]) != "" {
		return nil, fieldError(string(other), "This field is not accepted here.")
	}
	return f, nil
}

// sendTarget reads the alias a code is to be sent to.
func (p *Passwordless) sendTarget(w http.ResponseWriter, r *http.Request, kind AliasKind) (Alias, *apiError) {
	f, e := p.sendFields(w, r, kind)
	if e != nil {
		return Alias{}, e
	}
	return p.aliasField(f, kind)
}

var sentDetail = map[AliasKind]string{
	KindEmail:  "A login token has been sent to your email.",
	KindMobile: "A login token has been sent to your mobile.",
}

// serveSend is POST {prefix}/email and /mobile: send a login code.
func (p *Passwordless) serveSend(kind AliasKind) func(http.ResponseWriter, *http.Request) *apiError {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		a, e := p.sendTarget(w, r, kind)
		if e != nil {
			return e
		}
		if e := p.sendLoginCode(r, a); e != nil {
			return e
		}
		writeJSON(w, http.StatusOK, map[string]string{"detail": sentDetail[kind]})
		return nil
	}
}

// sendLoginCode queues a login code for a. Every alias takes the same
// steps, down to the outbox row; only the row's deliver flag differs, and
// the worker drops what is not to be sent.
func (p *Passwordless) sendLoginCode(r *http.Request, a Alias) *apiError {
	// Every alias costs the same lookup, so the time tells nothing.
	u, err := p.store.UserByAlias(r.Context(), p.Realm, a)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return p.internal("looking up user", err)
	}
	known := err == nil
	// An alias that may not sign in (unknown with registration closed,
	// outside the allow list, or a disabled user's) gets the same work,
	// answer and time as any other, but nothing is sent and its code can
	// never log in.
	deliver := p.access.admits(a) && (known && !u.Disabled || !known && *p.RegisterNewUsers)
	if _, demo := p.demoCode(a); demo {
		// The demo code is fixed and known: nothing to send.
		deliver = false
	}
	return p.queueCode(r, a, purposeLogin, "", deliver)
}

// queueCode applies the send limits, makes a code for alias and purpose,
// and stores its hash and its message in one transaction. The request
// ends there, in the same time whatever the alias and whatever the
// provider does; the outbox workers deliver.
func (p *Passwordless) queueCode(r *http.Request, a Alias, purpose, userID string, deliver bool) *apiError {
	if p.outbox.health[a.Kind].failing() {
		return deliveryFailing
	}
	code, err := newCode(p.CodeLength)
	if err != nil {
		return p.internal("generating code", err)
	}
	id, err := randomID()
	if err != nil {
		return p.internal("generating code id", err)
	}
	t := now()
	exp := t.Add(time.Duration(p.CodeTTL))
	c := Code{
		ID: id, Alias: p.aliasKey(a), Purpose: purpose, UserID: userID,
		Hash:      codeHash(p.hmacKey, p.aliasKey(a), purpose, code),
		ExpiresAt: exp, CreatedAt: t,
	}
	m := OutboxMessage{ID: id, Queue: p.outbox.queues[a.Kind], Channel: a.Kind, To: a.Value, Purpose: purpose,
		Deliver: deliver, ExpiresAt: exp, CreatedAt: t}
	if deliver {
		// The message must carry the code in clear; the worker deletes it
		// with the row once it is sent or dropped.
		m.Code = code
	}
	wait, by, err := p.store.QueueCode(r.Context(), p.sendLimits(r, a), c, m, t)
	if err != nil {
		return p.internal("queueing code", err)
	}
	if wait > 0 {
		countRateLimited(limitName(by))
		return tooMany(wait)
	}
	p.outbox.notify(a.Kind)
	return nil
}

// invalidCode is the one answer to every failed exchange: wrong, expired,
// used, unknown alias or another alias's code all look the same.
var invalidCode = &apiError{status: http.StatusBadRequest, detail: "The code is invalid or has expired."}

// redeem checks a presented code for alias and purpose. It answers the
// stored code on success; a failure counts toward the alias's lockout.
func (p *Passwordless) redeem(ctx context.Context, ip string, a Alias, purpose, code string) (Code, *apiError) {
	key := p.aliasKey(a)
	stored, res, err := p.store.RedeemCode(ctx, key, purpose, func(hash []byte) bool {
		return subtle.ConstantTimeCompare(hash, codeHash(p.hmacKey, key, purpose, code)) == 1
	}, p.MaxAttempts, now())
	if err != nil {
		return Code{}, p.internal("redeeming code", err)
	}
	if res != CodeOK {
		return Code{}, p.failed(ctx, ip, a)
	}
	return stored, nil
}

// demoCode returns the fixed code of a demo user.
func (p *Passwordless) demoCode(a Alias) (string, bool) {
	for _, d := range p.DemoUsers {
		if da, err := parseAlias(d.Alias); err == nil && da == a {
			return d.Code, true
		}
	}
	return "", false
}

// serveToken is POST {prefix}/token: exchange a code for tokens.
func (p *Passwordless) serveToken(w http.ResponseWriter, r *http.Request) *apiError {
	a, code, e := p.exchangeFields(w, r)
	if e != nil {
		return e
	}
	ctx := context.WithoutCancel(r.Context())
	u, e := p.login(ctx, r, a, code)
	if e != nil {
		return e
	}
	resp, sid, e := p.newSession(ctx, r, u)
	if e != nil {
		return e
	}
	p.loggedIn(ctx, a, u, sid)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// login redeems a login code (or a demo user's fixed code) for a and
// returns the user, created if registration is open.
func (p *Passwordless) login(ctx context.Context, r *http.Request, a Alias, code string) (User, *apiError) {
	demo, isDemo := p.demoCode(a)
	if isDemo {
		// A fixed code is only as safe as the limits around it.
		if e := p.allowIP(r); e != nil {
			return User{}, e
		}
		// A demo alias logs in only with its fixed code.
		if subtle.ConstantTimeCompare([]byte(demo), []byte(code)) != 1 {
			return User{}, p.failed(ctx, clientIP(r), a)
		}
	} else if _, e := p.redeem(ctx, clientIP(r), a, purposeLogin, code); e != nil {
		return User{}, e
	}
	// Outside the allow list: the failure of a wrong code, as for an
	// unknown alias.
	if !p.access.admits(a) {
		return User{}, p.failed(ctx, clientIP(r), a)
	}
	u, created, err := p.store.Login(ctx, p.Realm, a, *p.RegisterNewUsers || isDemo, now())
	if errors.Is(err, ErrNotFound) {
		return User{}, p.failed(ctx, clientIP(r), a)
	}
	if err != nil {
		return User{}, p.internal("logging in", err)
	}
	if err := p.store.ResetFailures(ctx, p.aliasKey(a)); err != nil {
		return User{}, p.internal("resetting failures", err)
	}
	if created {
		p.audit(ctx, auditUserCreated, auditEvent{UserID: u.ID, Channel: a.Kind})
	}
	return u, nil
}

type tokenResponse struct {
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
}

// newSession starts a session for u and issues its first tokens.
// It answers the session's id too.
func (p *Passwordless) newSession(ctx context.Context, r *http.Request, u User) (tokenResponse, string, *apiError) {
	s, refresh, e := p.startSession(ctx, r, u)
	if e != nil {
		return tokenResponse{}, "", e
	}
	resp, e := p.tokens(u, s.ID, refresh)
	return resp, s.ID, e
}

// startSession stores a new session for u that lives refresh_ttl, with
// its first refresh token. The client's address is kept for the operator.
func (p *Passwordless) startSession(ctx context.Context, r *http.Request, u User) (Session, string, *apiError) {
	sid, err := randomID()
	if err != nil {
		return Session{}, "", p.internal("generating session id", err)
	}
	refresh, err := randomToken()
	if err != nil {
		return Session{}, "", p.internal("generating refresh token", err)
	}
	t := now()
	refreshExp := t.Add(time.Duration(p.JWT.RefreshTTL))
	s := Session{ID: sid, UserID: u.ID, CreatedAt: t, ExpiresAt: refreshExp, ClientIP: clientIP(r)}
	if err := p.store.CreateSession(ctx, s, opaqueHash(refresh), refreshExp); err != nil {
		return Session{}, "", p.internal("creating session", err)
	}
	return s, refresh, nil
}

// tokens issues an access token for u in session sid, next to refresh.
func (p *Passwordless) tokens(u User, sid, refresh string) (tokenResponse, *apiError) {
	ttl := time.Duration(p.JWT.TTL)
	tok, e := p.accessToken(u, sid, ttl)
	if e != nil {
		return tokenResponse{}, e
	}
	return tokenResponse{Token: tok, RefreshToken: refresh, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second)}, nil
}

// accessToken signs a token for u in session sid that lives ttl.
func (p *Passwordless) accessToken(u User, sid string, ttl time.Duration) (string, *apiError) {
	jti, err := randomID()
	if err != nil {
		return "", p.internal("generating token id", err)
	}
	t := now()
	c := &Claims{
		Email: u.Email, Mobile: u.Mobile, SessionID: sid, Roles: p.access.roles(u),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: u.ID, ID: jti, Issuer: p.JWT.Issuer,
			IssuedAt: jwt.NewNumericDate(t), ExpiresAt: jwt.NewNumericDate(t.Add(ttl)),
		},
	}
	if p.JWT.Audience != "" {
		c.Audience = jwt.ClaimStrings{p.JWT.Audience}
	}
	tok, err := p.keys.sign(c)
	if err != nil {
		return "", p.internal("signing token", err)
	}
	return tok, nil
}

// internal logs a technical failure and answers 500 without its details.
func (p *Passwordless) internal(what string, err error) *apiError {
	p.logger.Error(what, zap.Error(err))
	return &apiError{status: http.StatusInternalServerError, detail: "Internal error. Please try again later."}
}

const (
	reasonMissing   = "missing"
	reasonInvalid   = "invalid"
	reasonRevoked   = "revoked"
	reasonCrossSite = "cross-site"
)

// authFailure is the answer to a request whose credentials failed: 401
// with the challenge RFC 6750 asks for, or 403 for a cookie sent by
// another site.
func authFailure(reason string) *apiError {
	switch reason {
	case reasonCrossSite:
		return crossSiteError
	case reasonMissing:
		return &apiError{status: http.StatusUnauthorized, detail: "Authentication credentials were not provided.", challenge: `Bearer`}
	}
	return &apiError{status: http.StatusUnauthorized, detail: "The token is invalid or has expired.", challenge: `Bearer error="invalid_token"`}
}
