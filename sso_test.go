package passwordless

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// safeNext is the check of `next` on a plain-HTTP block with no hosts to
// return to: a path of the site, or /.
func safeNext(next string) string {
	return new(Passwordless).safeNext(httptest.NewRequest("GET", "/", nil), next)
}

func TestAbsoluteNextOnlyToReturnHosts(t *testing.T) {
	p := &Passwordless{CookieDomain: "example.com", JWT: &JWTConfig{}}
	if err := p.provisionSSO(func(*string) {}); err != nil {
		t.Fatal(err)
	}
	plain, tls := httptest.NewRequest("GET", "http://auth.example.com/", nil), httptest.NewRequest("GET", "https://auth.example.com/", nil)
	for in, want := range map[string]string{
		"https://app1.example.com/a?b=1":            "https://app1.example.com/a?b=1",
		"https://APP1.example.com:8443/x/../y":      "https://app1.example.com:8443/y",
		"https://example.com":                       "https://example.com/",
		"https://evil.example/":                     "/",
		"https://example.com.evil.example/":         "/",
		"https://evilexample.com/":                  "/",
		"https://user@app1.example.com/":            "/",
		"http://app1.example.com/":                  "/", // not over HTTPS
		"https://app1.example.com\\@evil.example":   "/",
		"javascript://app1.example.com/%0aalert(1)": "/",
		"//app1.example.com/":                       "/",
		"/local?x=1":                                "/local?x=1",
		// A browser maps a fullwidth solidus to '/': the host it reads is
		// evil.example, whatever the name ends with.
		"https://evil.example\uff0f.example.com/": "/",
		"https://app1.example.com:８４４３/":          "/",
		// The target goes into a Location header and a page as one token.
		"/a? b=\"<é>": "/a?%20b=%22%3C%C3%A9%3E",
	} {
		if got := p.safeNext(tls, in); got != want {
			t.Errorf("over HTTPS, next %q = %q, want %q", in, got, want)
		}
	}
	if got := p.safeNext(plain, "http://app1.example.com/x"); got != "http://app1.example.com/x" {
		t.Errorf("over HTTP, next http://app1.example.com/x = %q", got)
	}
}

func TestSessionCookieIsFoundWithoutParsingTheOthers(t *testing.T) {
	lines := []string{`theme=dark; xpwl_session=evil; other="pwl_session=evil"; __Host-pwl_session=tok1; pwl_session=tok2`}
	if got := cookieValue(lines, secureCookieName); got != "tok1" {
		t.Errorf("__Host- cookie: %q", got)
	}
	if got := cookieValue(lines, cookieName); got != "tok2" {
		t.Errorf("plain cookie: %q", got)
	}
	if got := cookieValue(lines, domainCookieName); got != "" {
		t.Errorf("absent cookie: %q", got)
	}
	for in, want := range map[string]string{
		"a=1; pwl_session=x; b=2":                    "a=1; b=2",
		"pwl_session=x; b=2":                         "b=2",
		"a=1; __Secure-pwl_session=x":                "a=1",
		"a=1;pwl_session=x;__Host-pwl_session=y;b=2": "a=1;b=2",
		`a="pwl_session=x"; mypwl_session=1`:         `a="pwl_session=x"; mypwl_session=1`,
	} {
		h := map[string][]string{"Cookie": {in}}
		dropSessionCookie(h)
		if got := h["Cookie"]; len(got) != 1 || got[0] != want {
			t.Errorf("dropSessionCookie(%q) = %q, want %q", in, got, want)
		}
	}
	h := map[string][]string{"Cookie": {"pwl_session=x", "a=1"}}
	dropSessionCookie(h)
	if got := h["Cookie"]; len(got) != 1 || got[0] != "a=1" {
		t.Errorf("a line of only the session cookie: %q", got)
	}
	h = map[string][]string{"Cookie": {"__Host-pwl_session=x"}}
	if dropSessionCookie(h); h["Cookie"] != nil {
		t.Errorf("only the session cookie: %q", h["Cookie"])
	}
}

// The cache of stripped Cookie lines answers what stripping answers, the
// second time too, stays within its size, and keeps no long line.
func TestStrippedCookieLines(t *testing.T) {
	c := &strippedCache{m: make(map[string]string)}
	for i := range 3 * strippedCacheSize {
		line := fmt.Sprintf("a=%d; pwl_session=tok%d; b=2", i, i)
		want := fmt.Sprintf("a=%d; b=2", i)
		for range 2 {
			if got := c.without(line); got != want {
				t.Fatalf("without(%q) = %q, want %q", line, got, want)
			}
		}
		if len(c.m) > strippedCacheSize {
			t.Fatalf("%d lines cached, more than %d", len(c.m), strippedCacheSize)
		}
	}
	if got := c.without("a=1; b=2"); got != "a=1; b=2" || len(c.m) > strippedCacheSize {
		t.Fatalf("a line without the cookie: %q", got)
	}
	long := "a=" + strings.Repeat("x", strippedMaxLine) + "; pwl_session=t"
	before := len(c.m)
	if got := c.without(long); got != long[:len(long)-len("; pwl_session=t")] {
		t.Fatalf("a long line: %d bytes back", len(got))
	}
	if _, cached := c.m[long]; cached || len(c.m) > before {
		t.Fatal("a long line was cached")
	}
}

func TestSingleSignOnCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, input, option, line string }{
		{"login_url relative", "passwordless {\n login_url /auth/login\n}", "login_url", "Testfile:2"},
		{"login_url not http", "passwordless {\n login_url ftp://auth.example.com/login\n}", "login_url", "Testfile:2"},
		{"login_url with userinfo", "passwordless {\n login_url https://u:p@auth.example.com/auth/login\n}", "login_url", "Testfile:2"},
		{"cookie_domain with scheme", "passwordless {\n cookie_domain https://example.com\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain with port", "passwordless {\n cookie_domain example.com:443\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain with path", "passwordless {\n cookie_domain example.com/app\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain IP", "passwordless {\n cookie_domain 192.0.2.1\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain bare star", "passwordless {\n cookie_domain *\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain wildcard", "passwordless {\n cookie_domain *.example.com\n}", "cookie_domain", "Testfile:2"},
		{"cookie_domain one label", "passwordless {\n cookie_domain com\n}", "cookie_domain", "Testfile:2"},
		{"return_hosts with scheme", "passwordless {\n return_hosts app.example.com https://b.example.com\n}", "return_hosts", "Testfile:2"},
		{"return_hosts with port", "passwordless {\n return_hosts app.example.com:8443\n}", "return_hosts", "Testfile:2"},
		{"return_hosts with path", "passwordless {\n return_hosts app.example.com/x\n}", "return_hosts", "Testfile:2"},
		{"return_hosts IP", "passwordless {\n return_hosts ::1\n}", "return_hosts", "Testfile:2"},
		{"return_hosts bare star", "passwordless {\n return_hosts *\n}", "return_hosts", "Testfile:2"},
		{"return_hosts star of one label", "passwordless {\n return_hosts *.com\n}", "return_hosts", "Testfile:2"},
		{"return_hosts one label", "passwordless {\n return_hosts localhost\n}", "return_hosts", "Testfile:2"},
		{"return_hosts empty", "passwordless {\n return_hosts\n}", "return_hosts", "Testfile:2"},
		{"login_url outside cookie_domain", "passwordless {\n cookie_domain example.com\n login_url https://auth.example.org/auth/login\n}", "login_url", "Testfile:3"},
		{"login_url outside cookie_domain, given first", "passwordless {\n login_url https://example.com.evil.example/auth/login\n\n cookie_domain example.com\n}", "login_url", "Testfile:2"},
		{"assertion with HS256", "passwordless {\n assertion\n jwt {\n algorithm HS256\n }\n}", "assertion", "Testfile:2"},
		{"assertion with HS256, jwt first", "passwordless {\n jwt {\n algorithm HS256\n }\n assertion\n}", "assertion", "Testfile:5"},
		{"assertion with an argument", "passwordless {\n assertion on\n}", "", "Testfile:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Passwordless
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.option) || !strings.Contains(err.Error(), tc.line) {
				t.Fatalf("error %v, want one naming %s and %s", err, tc.option, tc.line)
			}
		})
	}
	// The options as they should be.
	var p Passwordless
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`passwordless {
		login_url https://auth.example.com/auth/login
		cookie_domain Example.com
		return_hosts app1.example.com *.apps.example.com
		assertion
	}`))
	if err != nil || p.LoginURL != "https://auth.example.com/auth/login" || p.CookieDomain != "Example.com" ||
		strings.Join(p.ReturnHosts, " ") != "app1.example.com *.apps.example.com" || !p.Assertion {
		t.Fatalf("%v: %+v", err, p)
	}
}

// TestSingleSignOnConfigFailsCaddyRun: the same mistakes in a JSON config,
// and through `caddy adapt` with the file's line.
func TestSingleSignOnConfigFailsCaddyRun(t *testing.T) {
	input := "example.com {\n\tpasswordless {\n\t\tcookie_domain example.com\n\t\tlogin_url https://auth.example.net/auth/login\n\t}\n}\n"
	_, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:4") || !strings.Contains(err.Error(), "login_url") {
		t.Fatalf("adapt error %v, want one naming login_url and Caddyfile:4", err)
	}
	for _, tc := range []struct {
		name string
		p    Passwordless
		want string
	}{
		{"login_url outside cookie_domain", Passwordless{LoginURL: "https://auth.example.net/login", CookieDomain: "example.com"}, "login_url"},
		{"cookie_domain one label", Passwordless{CookieDomain: "{env.PWL_TEST_ONE_LABEL}"}, "cookie_domain"},
		{"return_hosts IP", Passwordless{ReturnHosts: []string{"10.1.2.3"}}, "return_hosts"},
		{"assertion with HS256", Passwordless{Assertion: true, JWT: &JWTConfig{Algorithm: "HS256", Secrets: []string{strings.Repeat("s", 32)}}}, "assertion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PWL_TEST_ONE_LABEL", "localhost")
			p := tc.p
			expectProvisionError(t, &p, tc.want)
		})
	}
}

func TestCookieDomainAndNext(t *testing.T) {
	e := newEnv(t, withConfig(`demo_user demo@example.com 135790
		cookie_domain example.com
		login_url http://auth.example.com/auth/login`))

	// The cookie is the domain's.
	r := e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790", "next": "http://app1.example.com/page?x=1"})
	expectStatus(t, r, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "http://app1.example.com/page?x=1" {
		t.Fatalf("next on the domain: %q", loc)
	}
	c := sessionCookieOf(t, r)
	if c.Domain != "example.com" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" {
		t.Fatalf("cookie %+v", c)
	}
	tok := c.Value

	// Any other host: the sign-in stays here.
	// (A browser reads the fullwidth solidus as '/', so its host is evil.example.)
	for _, next := range []string{"http://evil.example/", "http://example.com.evil.example/", "//app1.example.com/", "http://u@app1.example.com/",
		"http://evil.example\uff0f.example.com/"} {
		r := e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790", "next": next})
		if loc := r.header.Get("Location"); loc != "/" {
			t.Errorf("next %q led to %q", next, loc)
		}
	}
	// The form's CSP lets the browser follow the redirect there.
	page := e.get("/auth/login?next="+url.QueryEscape("http://app2.example.com/x"), "Accept", "text/html")
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' http://app2.example.com;") {
		t.Fatalf("CSP %q", csp)
	}
	if !strings.Contains(string(page.body), `value="http://app2.example.com/x"`) {
		t.Fatalf("the form does not carry next:\n%s", page.body)
	}
	for _, next := range []string{"http://evil.example/x", "http://evil.example\uff0f.example.com/x"} {
		page = e.get("/auth/login?next="+url.QueryEscape(next), "Accept", "text/html")
		if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self';") {
			t.Fatalf("CSP for a foreign next %q: %q", next, csp)
		}
	}

	// This host is not the domain's: protection keeps its own page.
	r = e.get("/app", "Accept", "text/html")
	if loc := r.header.Get("Location"); r.status != http.StatusFound || loc != "/auth/login?next=%2Fapp" {
		t.Fatalf("protection's redirect from localhost: %d %q", r.status, loc)
	}

	// A sign-out button on an app of the domain ends the session and
	// clears the cookie under every name and Domain; another site's
	// cannot.
	cookie := cookieName + "=" + tok
	expectStatus(t, e.postForm("/auth/logout", nil, "Cookie", cookie, "Origin", "http://evil.example"), http.StatusForbidden)
	expectStatus(t, e.get("/app", "Cookie", cookie), http.StatusOK)
	r = e.postForm("/auth/logout", map[string]string{"next": "http://app1.example.com/page"}, "Cookie", cookie, "Origin", "http://app1.example.com")
	expectStatus(t, r, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "http://auth.example.com/auth/login?next="+url.QueryEscape("http://app1.example.com/page") {
		t.Fatalf("after sign-out to %q", loc)
	}
	cleared := map[string]bool{}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.MaxAge < 0 {
			cleared[c.Name+" "+c.Domain] = true
		}
	}
	if !cleared[cookieName+" "] || !cleared[cookieName+" example.com"] {
		t.Fatalf("cleared %v", r.header.Values("Set-Cookie"))
	}
	expectStatus(t, e.get("/app", "Cookie", cookie, "Accept", "application/json"), http.StatusUnauthorized)
}

func TestProtectionRedirectsToLoginURL(t *testing.T) {
	e := newEnv(t, withConfig("login_url http://localhost:9080/auth/login"))
	r := e.get("/app/page?x=1", "Accept", "text/html")
	want := "http://localhost:9080/auth/login?next=" + url.QueryEscape(testBase+"/app/page?x=1")
	if loc := r.header.Get("Location"); r.status != http.StatusFound || loc != want {
		t.Fatalf("%d to %q, want %q", r.status, loc, want)
	}
}

// TestReadmeAuthHostConfig: the sign-in host's config in the README
// adapts, with the check on a site of no host that trusts loopback.
func TestReadmeAuthHostConfig(t *testing.T) {
	cfg := readmeBlock(t, "caddyfile", "trusted_proxies")
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("the README's config: %v", err)
	}
	for _, want := range []string{`":9000"`, `"127.0.0.1/32"`, `"login_url":"https://auth.example.com/auth/login"`, `"cookie_domain":"example.com"`, `"assertion":true`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("adapted config lacks %s: %s", want, out)
		}
	}
}
