package passwordless

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// trustLoopback makes the test client, on loopback, a trusted proxy.
var trustLoopback = withGlobal("servers {\n trusted_proxies static 127.0.0.1/32 ::1/128\n}")

// check asks {prefix}/check about a request, as a proxy would: header
// pairs, then the check's path (default /auth/check).
func (e *env) check(header ...string) response {
	e.t.Helper()
	path := "/auth/check"
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "path" {
			path = header[i+1]
			continue
		}
		h.Add(header[i], header[i+1])
	}
	r := e.do(http.MethodGet, path, h, nil)
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		e.t.Errorf("check answered with Cache-Control %q, want no-store", cc)
	}
	return r
}

func expectIdentity(t *testing.T, r response, id, email string) {
	t.Helper()
	expectStatus(t, r, http.StatusOK)
	if got := r.header.Get("X-Auth-User-Id"); got != id {
		t.Errorf("X-Auth-User-Id %q, want %q", got, id)
	}
	if got := r.header.Get("X-Auth-User-Email"); got != email {
		t.Errorf("X-Auth-User-Email %q, want %q", got, email)
	}
	for _, absent := range []string{"X-Auth-User-Mobile", "X-Auth-User-Roles", "X-Auth-Assertion"} {
		if _, ok := r.header[absent]; ok {
			t.Errorf("%s is present: %q", absent, r.header.Get(absent))
		}
	}
	if len(r.body) != 0 {
		t.Errorf("a 200 with a body: %s", r.body)
	}
}

func TestCheckAnswersOnlyTrustedProxies(t *testing.T) {
	logOpt, logPath := captureLog(t)
	e := newEnv(t, logOpt, withGlobal("servers {\n trusted_proxies static 10.0.0.0/8\n}"))
	tok := e.login("far@example.com").str("token")
	r := e.check("X-Forwarded-Uri", "/public", "Authorization", "Bearer "+tok)
	expectStatus(t, r, http.StatusForbidden)
	if r.str("detail") == "" {
		t.Fatalf("no detail: %s", r.body)
	}
	if r.header.Get("X-Auth-User-Id") != "" {
		t.Fatal("an untrusted peer learnt who the token is")
	}
	text, entries := readLog(t, logPath)
	warned := false
	for _, l := range entries {
		if l.str("level") == "warn" && strings.Contains(l.str("msg"), "trusted_proxies") && strings.HasPrefix(l.str("peer"), "127.0.0.1:") {
			warned = true
		}
	}
	if !warned || strings.Contains(text, tok) {
		t.Fatalf("no warning naming the peer, or the token in the log:\n%s", text)
	}
}

func TestCheckCountsDecisions(t *testing.T) {
	e := newEnv(t, trustLoopback, withConfig(`protect /admin/* {
			role admin
		}
		protect /*`))
	tok := e.login("count@example.com").str("token")
	before := scrape(t)
	expectStatus(t, e.check("X-Forwarded-Uri", "/app", "Authorization", "Bearer "+tok), http.StatusOK)
	expectStatus(t, e.check("X-Forwarded-Uri", "/app"), http.StatusUnauthorized)
	expectStatus(t, e.check("X-Forwarded-Uri", "/admin/x", "Authorization", "Bearer "+tok), http.StatusForbidden)
	expectStatus(t, e.check("X-Forwarded-Uri", "app"), http.StatusBadRequest)
	expectDeltas(t, deltas(before, scrape(t)), map[string]float64{
		`caddy_passwordless_protected_requests_total{result="allowed"}`:         1,
		`caddy_passwordless_protected_requests_total{result="unauthenticated"}`: 1,
		`caddy_passwordless_protected_requests_total{result="forbidden"}`:       1,
	})
}

func TestCheckJudgesLikeProtection(t *testing.T) {
	e := newEnv(t, trustLoopback, withConfig(`public /public/* /health
		protect /admin/* {
			role admin
		}
		protect /*`))
	login := e.login("judge@example.com")
	tok := login.str("token")
	id := tokenSubject(t, tok)
	auth := []string{"Authorization", "Bearer " + tok}

	// Signed in: who the user is, and nothing on a public path.
	expectIdentity(t, e.check(append(auth, "X-Forwarded-Uri", "/app?x=1", "X-Forwarded-Method", "GET")...), id, "judge@example.com")
	expectIdentity(t, e.check(append(auth, "X-Forwarded-Uri", "/public/a.css")...), "", "")
	expectIdentity(t, e.check("X-Forwarded-Uri", "/health"), "", "")
	// The client's identity headers, as a proxy passes them on, are
	// never echoed.
	expectIdentity(t, e.check("X-Forwarded-Uri", "/health", "X-Auth-User-Id", "admin", "X-Auth-Assertion", "forged"), "", "")

	// Signed out: 401 for an API client.
	r := e.check("X-Forwarded-Uri", "/app", "Accept", "application/json")
	expectStatus(t, r, http.StatusUnauthorized)
	if r.header.Get("WWW-Authenticate") != "Bearer" || r.str("detail") == "" || r.header.Get("Location") != "" {
		t.Fatalf("signed out: %v %s", r.header, r.body)
	}
	// Every reading of the path: a backend may serve /secret for each.
	for _, uri := range []string{"/public/../secret", "/public/%2e%2e/secret", "/public/%2E%2E/secret", "/public/..;/secret",
		"/public/..%2fsecret", "/public\\..\\secret", "/public/.%2e/secret", "/public;/../secret"} {
		for _, hdr := range []string{"X-Forwarded-Uri", "X-Original-URI"} {
			if r := e.check(hdr, uri); r.status != http.StatusUnauthorized {
				t.Errorf("%s %s: status %d, want 401", hdr, uri, r.status)
			}
		}
	}
	// Rules: signed in but not an admin.
	r = e.check(append(auth, "X-Forwarded-Uri", "/admin/users")...)
	expectStatus(t, r, http.StatusForbidden)
	if r.str("detail") != "You do not have permission to perform this action." {
		t.Fatalf("403 body %s", r.body)
	}
	r = e.check(append(auth, "X-Forwarded-Uri", "/admin/users", "Accept", "text/html")...)
	expectStatus(t, r, http.StatusForbidden)
	if !strings.Contains(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "judge@example.com") {
		t.Fatalf("403 page for a browser: %s", r.body)
	}
	expectStatus(t, e.check(append(auth, "X-Forwarded-Uri", "/docs/..;/admin/users")...), http.StatusForbidden)

	// A described CORS preflight passes as it would in Caddy.
	expectIdentity(t, e.check("X-Forwarded-Uri", "/app", "X-Forwarded-Method", "OPTIONS",
		"Origin", "https://spa.example", "Access-Control-Request-Method", "POST"), "", "")

	// Envoy's path_prefix: the original path follows the check's.
	expectIdentity(t, e.check(append(auth, "path", "/auth/check/app/x?y=1")...), id, "judge@example.com")
	expectStatus(t, e.check("path", "/auth/check/app/x"), http.StatusUnauthorized)
	expectIdentity(t, e.check("path", "/auth/check/public/x"), "", "")
	expectStatus(t, e.check("path", "/auth/check/public/%2e%2e/x"), http.StatusUnauthorized)

	// A logged-out session is refused at once.
	expectStatus(t, e.postForm("/auth/logout", nil, auth...), http.StatusNoContent)
	expectStatus(t, e.check(append(auth, "X-Forwarded-Uri", "/app")...), http.StatusUnauthorized)
}

func TestCheckSendsBrowsersToSignIn(t *testing.T) {
	e := newEnv(t, trustLoopback)
	html := []string{"Accept", "text/html,application/xhtml+xml"}
	want := "/auth/login?next=" + url.QueryEscape("/app/page?x=1")

	// Traefik, Caddy and Envoy pass a 302 on.
	r := e.check(append(html, "X-Forwarded-Uri", "/app/page?x=1", "X-Forwarded-Method", "GET", "X-Forwarded-Host", "app.example.com")...)
	expectStatus(t, r, http.StatusFound)
	if loc := r.header.Get("Location"); loc != want {
		t.Fatalf("302 to %q, want %q", loc, want)
	}
	r = e.check(append(html, "path", "/auth/check/app/page?x=1")...)
	if loc := r.header.Get("Location"); r.status != http.StatusFound || loc != want {
		t.Fatalf("Envoy style: %d to %q", r.status, loc)
	}
	// nginx's auth_request turns a 302 into a 500: a 401 carries it.
	r = e.check(append(html, "X-Original-URI", "/app/page?x=1", "X-Original-Method", "GET")...)
	expectStatus(t, r, http.StatusUnauthorized)
	if loc := r.header.Get("Location"); loc != want {
		t.Fatalf("401 with Location %q, want %q", loc, want)
	}
	r = e.check(append(html, "X-Original-URL", "http://app.example.com/app/page?x=1", "X-Original-Method", "GET")...)
	if loc := r.header.Get("Location"); r.status != http.StatusUnauthorized || loc != want {
		t.Fatalf("X-Original-URL: %d with Location %q", r.status, loc)
	}
	// Not a navigation: no redirect.
	for _, method := range []string{"POST", "DELETE"} {
		r = e.check(append(html, "X-Forwarded-Uri", "/app", "X-Forwarded-Method", method)...)
		if r.status != http.StatusUnauthorized || r.header.Get("Location") != "" {
			t.Fatalf("%s: %d, Location %q", method, r.status, r.header.Get("Location"))
		}
	}
}

func TestCheckReadsTheCookieOfTheDescribedScheme(t *testing.T) {
	e := newEnv(t, trustLoopback, withConfig("demo_user demo@example.com 135790"))
	tok := sessionCookieOf(t, e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790"})).Value
	id := tokenSubject(t, tok)
	uri := []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Host", "app.example.com"}
	ok := func(proto, cookie string) {
		t.Helper()
		expectIdentity(t, e.check(append(uri, "X-Forwarded-Proto", proto, "Cookie", "theme=dark; "+cookie+"="+tok)...), id, "demo@example.com")
	}
	refused := func(proto, cookie string) {
		t.Helper()
		expectStatus(t, e.check(append(uri, "X-Forwarded-Proto", proto, "Cookie", cookie+"="+tok)...), http.StatusUnauthorized)
	}
	ok("http", cookieName)
	ok("https", secureCookieName)
	// Over HTTPS a cookie anyone on the domain or on HTTP can plant is no
	// credential, nor is the domain-wide one without cookie_domain.
	refused("https", cookieName)
	refused("https", domainCookieName)
	refused("http", secureCookieName)

	// A cookie-authenticated unsafe method must come from the described
	// site.
	post := append(uri, "X-Forwarded-Method", "POST", "Cookie", cookieName+"="+tok)
	expectStatus(t, e.check(append(post, "Origin", "https://evil.example")...), http.StatusForbidden)
	expectIdentity(t, e.check(append(post, "Origin", "http://app.example.com")...), id, "demo@example.com")
}

func TestCheckFailsClosed(t *testing.T) {
	e := newEnv(t, trustLoopback)
	tok := e.login("closed@example.com").str("token")
	auth := []string{"Authorization", "Bearer " + tok}
	for _, tc := range []struct {
		name   string
		header []string
	}{
		{"no URI", nil},
		{"URI not a path", []string{"X-Forwarded-Uri", "app/x"}},
		{"absolute URI", []string{"X-Forwarded-Uri", "http://app.example.com/x"}},
		{"asterisk", []string{"X-Original-URI", "*"}},
		{"URI twice", []string{"X-Forwarded-Uri", "/public", "X-Forwarded-Uri", "/app"}},
		{"empty URI", []string{"X-Forwarded-Uri", ""}},
		{"bad escape", []string{"X-Forwarded-Uri", "/a%zz"}},
		{"a client's X-Forwarded-Uri through nginx", []string{"X-Original-URI", "/app", "X-Forwarded-Uri", "/public"}},
		{"a client's X-Original-URI through Caddy", []string{"X-Forwarded-Uri", "/app", "X-Original-URI", "/public"}},
		{"URI and path differ", []string{"path", "/auth/check/public", "X-Forwarded-Uri", "/app"}},
		{"methods differ", []string{"X-Original-URI", "/app", "X-Original-Method", "GET", "X-Forwarded-Method", "OPTIONS"}},
		{"method listed", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Method", "GET, OPTIONS"}},
		{"method twice", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Method", "GET", "X-Forwarded-Method", "GET"}},
		{"hosts listed", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Host", "app.example.com, evil.example"}},
		{"host twice", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Host", "a.example.com", "X-Forwarded-Host", "a.example.com"}},
		{"bad host", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Host", "a b"}},
		{"hosts differ", []string{"X-Original-URL", "https://a.example.com/app", "X-Forwarded-Host", "b.example.com"}},
		{"schemes listed", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Proto", "https,http"}},
		{"unknown scheme", []string{"X-Forwarded-Uri", "/app", "X-Forwarded-Proto", "ftp"}},
		{"schemes differ", []string{"X-Original-URL", "https://a.example.com/app", "X-Forwarded-Proto", "http"}},
		{"X-Original-URL relative", []string{"X-Original-URL", "/app"}},
		{"X-Original-URL with userinfo", []string{"X-Original-URL", "https://u@a.example.com/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.check(append(tc.header, auth...)...)
			expectStatus(t, r, http.StatusBadRequest)
			if r.str("detail") == "" || r.header.Get("X-Auth-User-Id") != "" {
				t.Fatalf("400 without detail, or with identity: %v %s", r.header, r.body)
			}
		})
	}
	// A trailing slash on the check's path is no URI of its own.
	expectStatus(t, e.check(append(auth, "path", "/auth/check/", "X-Forwarded-Uri", "/app")...), http.StatusOK)
	// Sources that agree are fine.
	expectStatus(t, e.check(append(auth, "X-Original-URI", "/app", "X-Original-URL", "https://a.example.com/app",
		"X-Forwarded-Host", "A.example.com", "X-Forwarded-Proto", "https")...), http.StatusOK)
}
