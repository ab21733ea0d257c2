package passwordless

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

// Forward authentication: {prefix}/check answers another proxy (nginx
// auth_request, Traefik forwardAuth, Caddy forward_auth, Envoy ext_authz)
// whether the request it describes may pass, judged exactly as protection
// judges a request Caddy serves itself.

// checkStyle is how the proxy described the request, which decides how a
// browser is sent to sign in.
type checkStyle int

const (
	// X-Forwarded-Uri, or the path after /check: Traefik, Caddy, Envoy
	// pass a 302 on to the browser.
	styleForwarded checkStyle = iota
	// X-Original-URI or -URL: nginx auth_request turns a 302 into a 500,
	// so the sign-in URL goes in the Location of a 401.
	styleOriginal
)

// describedTLS stands in for the TLS connection the proxy received when
// it says the request came over HTTPS: only its presence is ever read
// (which cookie counts, which scheme a URL has).
var describedTLS = &tls.ConnectionState{}

var untrustedPeer = &apiError{status: http.StatusForbidden, detail: "Only a trusted proxy may ask this."}

// serveCheck is {prefix}/check, any method.
func (p *Passwordless) serveCheck(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	// Whoever may call it chooses every header it reads: X-Forwarded-Uri
	// believed from any peer would let a client name a public path while
	// asking for a protected one.
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); !trusted {
		p.logger.Warn("check refused: the peer is not in the server's trusted_proxies", zap.String("peer", r.RemoteAddr))
		writeError(w, untrustedPeer)
		return
	}
	d, style, e := p.describedRequest(r)
	if e != nil {
		p.logger.Debug("check refused: the described request is malformed", zap.String("reason", e.detail))
		writeError(w, e)
		return
	}
	v := p.judge(d)
	switch v.kind {
	case signedOut:
		// Without login_url the sign-in page is this block's, on the
		// host the browser is on; with it, only a host it may return to
		// gets a redirect: any other would be an open one.
		if loc, ok := p.signInURL(d, v.reason, p.loginURL == nil); ok {
			h.Set("Location", loc)
			if style == styleForwarded {
				w.WriteHeader(http.StatusFound)
				return
			}
		}
		writeError(w, authFailure(v.reason))
		return
	case forbidden:
		p.forbidden(w, d, v.st)
		return
	case allowed:
		setIdentity(h, v.st)
	}
	if p.Assertion {
		a, e := p.assertion(d.Host, v.st)
		if e != nil {
			writeError(w, e)
			return
		}
		h[headerAssertion] = []string{a}
	}
	w.WriteHeader(http.StatusOK)
}

// describedRequest is the request a proxy asks about, read from its
// headers: the URI from X-Forwarded-Uri, X-Original-URI, X-Original-URL or
// the path after /check; the method from X-Forwarded-Method or
// X-Original-Method; host and scheme from X-Forwarded-Host and -Proto or
// X-Original-URL; each else the check's own. Credentials, Accept, Origin
// and cookies are the check's own: proxies copy the client's.
//
// It fails closed: no URI, a header given twice or listing values, or two
// sources that disagree (a client's X-Forwarded-Uri passed on by an nginx
// that sets X-Original-URI) is 400, never a guess.
func (p *Passwordless) describedRequest(r *http.Request) (*http.Request, checkStyle, *apiError) {
	var e *apiError
	single := func(name string, list bool) string {
		vs := r.Header[name]
		switch {
		case e != nil || len(vs) == 0:
			return ""
		case len(vs) > 1:
			e = badRequest(name + " is given more than once.")
		case vs[0] == "":
			e = badRequest(name + " is empty.")
		case list && strings.Contains(vs[0], ","):
			e = badRequest(name + " lists several values.")
		default:
			return vs[0]
		}
		return ""
	}
	fwdURI, origURI, origURL := single("X-Forwarded-Uri", false), single("X-Original-Uri", false), single("X-Original-Url", false)
	fwdMethod, origMethod := single("X-Forwarded-Method", true), single("X-Original-Method", true)
	fwdHost, fwdProto := single("X-Forwarded-Host", true), single("X-Forwarded-Proto", true)
	if e != nil {
		return nil, 0, e
	}
	var urlURI, urlHost, urlScheme string
	if origURL != "" {
		u, err := url.Parse(origURL)
		if err != nil || u.Host == "" || u.User != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, 0, badRequest("X-Original-URL is not an absolute http(s) URL.")
		}
		urlURI, urlHost, urlScheme = u.EscapedPath(), u.Host, u.Scheme
		if urlURI == "" {
			urlURI = "/"
		}
		if u.ForceQuery || u.RawQuery != "" {
			urlURI += "?" + u.RawQuery
		}
	}
	// Envoy's path_prefix puts the original path after the check's.
	pathURI := strings.TrimPrefix(r.URL.EscapedPath(), p.Prefix+"/check")
	if pathURI != "" && (r.URL.ForceQuery || r.URL.RawQuery != "") {
		pathURI += "?" + r.URL.RawQuery
	}
	if pathURI == "/" && (fwdURI != "" || origURI != "" || urlURI != "") {
		pathURI = "" // a trailing slash, as drfpasswordless clients write paths
	}

	uri, ok := agree(false, fwdURI, origURI, urlURI, pathURI)
	switch {
	case !ok:
		return nil, 0, badRequest("The request's URI is given in several ways that differ.")
	case uri == "":
		return nil, 0, badRequest("The request's URI is missing: set X-Forwarded-Uri or X-Original-URI.")
	case uri[0] != '/':
		return nil, 0, badRequest("The request's URI must be a path starting with /.")
	}
	style := styleForwarded
	if fwdURI == "" && (origURI != "" || origURL != "") {
		style = styleOriginal
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil || strings.ContainsAny(uri, " \t") {
		return nil, 0, badRequest("The request's URI is malformed.")
	}

	method, ok := agree(false, fwdMethod, origMethod)
	if !ok {
		return nil, 0, badRequest("The request's method is given in several ways that differ.")
	}
	if method == "" {
		method = r.Method
	} else if !validMethod(method) {
		return nil, 0, badRequest("The request's method is malformed.")
	}

	host, ok := agree(true, fwdHost, urlHost)
	if !ok {
		return nil, 0, badRequest("The request's host is given in several ways that differ.")
	}
	if host == "" {
		host = r.Host
	} else if !httpguts.ValidHostHeader(host) {
		return nil, 0, badRequest("The request's host is malformed.")
	}

	scheme, ok := agree(true, fwdProto, urlScheme)
	switch scheme = strings.ToLower(scheme); {
	case !ok || scheme != "" && scheme != "http" && scheme != "https":
		return nil, 0, badRequest("The request's scheme is given in several ways that differ, or is not http or https.")
	case scheme == "" && isHTTPS(r), scheme == "https":
		scheme = "https"
	}

	d := new(http.Request)
	*d = *r
	d.Method, d.URL, d.RequestURI, d.Host, d.TLS = method, u, uri, host, nil
	if scheme == "https" {
		d.TLS = describedTLS
	}
	return d, style, nil
}

// agree returns the first of the values given, and whether every value
// given is the same (ignoring case with fold).
func agree(fold bool, vals ...string) (string, bool) {
	first := ""
	for _, v := range vals {
		switch {
		case v == "":
		case first == "":
			first = v
		case v != first && !(fold && strings.EqualFold(v, first)):
			return "", false
		}
	}
	return first, true
}

// validMethod reports whether m is an HTTP method token.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}
