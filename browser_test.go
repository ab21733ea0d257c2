package passwordless

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// postLogin posts the sign-in form as a page of the site would.
func (e *env) postLogin(fields map[string]string, header ...string) response {
	e.t.Helper()
	return e.postForm("/auth/login", fields, append([]string{"Origin", testBase}, header...)...)
}

func sessionCookieOf(t *testing.T, r response) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", cookieName, r.header.Values("Set-Cookie"))
	return nil
}

func TestBrowserNavigationGoesToLogin(t *testing.T) {
	e := newEnv(t)
	r := e.get("/app/page?x=1", "Accept", "text/html,application/xhtml+xml")
	expectStatus(t, r, http.StatusFound)
	if loc := r.header.Get("Location"); loc != "/auth/login?next="+url.QueryEscape("/app/page?x=1") {
		t.Fatalf("Location %q", loc)
	}
	// API clients and unsafe methods get the 401.
	expectStatus(t, e.get("/app/page", "Accept", "application/json"), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/app/page", nil, "Accept", "text/html"), http.StatusUnauthorized)
}

func TestBrowserSignIn(t *testing.T) {
	e := newEnv(t)
	page := e.get("/auth/login?next=/app/home", "Accept", "text/html")
	expectStatus(t, page, http.StatusOK)
	body := string(page.body)
	if !strings.Contains(body, `<label for="alias">`) || !strings.Contains(body, `value="/app/home"`) ||
		strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Fatalf("login page:\n%s", body)
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}

	r := e.postLogin(map[string]string{"alias": "Browser@Example.com", "next": "/app/home"})
	expectStatus(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `autocomplete="one-time-code"`) {
		t.Fatalf("code step:\n%s", r.body)
	}
	code := e.smtp.code(t, "browser@example.com")

	bad := e.postLogin(map[string]string{"alias": "browser@example.com", "code": wrongCode(code, 1), "next": "/app/home"})
	expectStatus(t, bad, http.StatusBadRequest)
	if !strings.Contains(string(bad.body), `role="alert"`) || len(bad.header.Values("Set-Cookie")) != 0 {
		t.Fatalf("wrong code page: %v\n%s", bad.header, bad.body)
	}

	r = e.postLogin(map[string]string{"alias": "browser@example.com", "code": code, "next": "/app/home"})
	expectStatus(t, r, http.StatusSeeOther)
	if r.header.Get("Location") != "/app/home" {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	c := sessionCookieOf(t, r)
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure || c.MaxAge < 3600 {
		t.Fatalf("cookie %+v", c)
	}
	up := e.get("/app/home", "Cookie", c.Name+"="+c.Value, "Accept", "text/html")
	expectStatus(t, up, http.StatusOK)
	if up.str("email") != "browser@example.com" {
		t.Fatalf("upstream saw %s", up.body)
	}
	me := e.get("/auth/me", "Cookie", c.Name+"="+c.Value)
	if me.str("email") != "browser@example.com" {
		t.Fatalf("/me by cookie: %s", me.body)
	}
}

func TestLoginFormRefusesOtherSites(t *testing.T) {
	e := newEnv(t)
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "x@example.com"}), http.StatusForbidden)
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "x@example.com"}, "Origin", "https://evil.example"), http.StatusForbidden)
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "x@example.com"}, "Sec-Fetch-Site", "cross-site"), http.StatusForbidden)
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "x@example.com"}, "Origin", "null", "Sec-Fetch-Site", "cross-site"), http.StatusForbidden)
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d codes sent for another site", n)
	}
	expectStatus(t, e.postForm("/auth/login", map[string]string{"alias": "x@example.com"}, "Sec-Fetch-Site", "same-origin"), http.StatusOK)
}

func TestNextStaysOnSite(t *testing.T) {
	for in, want := range map[string]string{
		"/app?a=1#x":           "/app?a=1#x",
		"https://evil.example": "/",
		"//evil.example/x":     "/",
		"/\\evil.example":      "/",
		"javascript:alert(1)":  "/",
		"":                     "/",
		"/ok\r\nSet-Cookie:x":  "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
	e := newEnv(t, withConfig("demo_user demo@example.com 135790"))
	r := e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790", "next": "//evil.example/"})
	expectStatus(t, r, http.StatusSeeOther)
	if r.header.Get("Location") != "/" {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
}

func TestCookieNeedsSameOriginForUnsafeMethods(t *testing.T) {
	e := newEnv(t, withConfig("demo_user demo@example.com 135790"))
	c := sessionCookieOf(t, e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790"}))
	cookie := c.Name + "=" + c.Value

	expectStatus(t, e.postForm("/app/delete", nil, "Cookie", cookie, "Origin", "https://evil.example"), http.StatusForbidden)
	expectStatus(t, e.postForm("/app/delete", nil, "Cookie", cookie), http.StatusForbidden)
	expectStatus(t, e.postForm("/app/delete", nil, "Cookie", cookie, "Origin", testBase), http.StatusOK)
	expectStatus(t, e.get("/app/read", "Cookie", cookie), http.StatusOK)
	// A bearer token is not sent by browsers on their own: no origin check.
	tok := e.postForm("/auth/token", map[string]string{"email": "demo@example.com", "token": "135790"}).str("token")
	expectStatus(t, e.postForm("/app/delete", nil, bearer(tok)...), http.StatusOK)
}

func TestCookieLogout(t *testing.T) {
	e := newEnv(t, withConfig("demo_user demo@example.com 135790"))
	c := sessionCookieOf(t, e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790"}))
	cookie := c.Name + "=" + c.Value
	expectStatus(t, e.postForm("/auth/logout", nil, "Cookie", cookie, "Origin", "https://evil.example"), http.StatusForbidden)
	expectStatus(t, e.get("/app", "Cookie", cookie), http.StatusOK)
	r := e.postForm("/auth/logout", nil, "Cookie", cookie, "Origin", testBase)
	expectStatus(t, r, http.StatusNoContent)
	if cleared := sessionCookieOf(t, r); cleared.MaxAge >= 0 {
		t.Fatalf("cookie not cleared: %+v", cleared)
	}
	expectStatus(t, e.get("/app", "Cookie", cookie), http.StatusUnauthorized)
}

// A mail scanner that follows the sign-in link gets the confirm page: only
// its POST uses the code.
func TestSignInLinkOnlyFillsTheForm(t *testing.T) {
	e := newEnv(t, withEmailOption("link_base "+testBase+"/"))
	expectStatus(t, e.postForm("/auth/email", map[string]string{"email": "link@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "link@example.com")
	m := e.smtp.last(t, "link@example.com")
	link := testBase + "/auth/login?alias=link%40example.com#code=" + code
	if !strings.Contains(m.Text, link) || !strings.Contains(m.HTML, `href="`+link+`"`) {
		t.Fatalf("no sign-in link %s in\n%s\n%s", link, m.Text, m.HTML)
	}
	// What a scanner fetches: the fragment never leaves the client.
	page := e.get("/auth/login?alias=link%40example.com", "Accept", "text/html")
	expectStatus(t, page, http.StatusOK)
	if !strings.Contains(string(page.body), `name="code"`) || strings.Contains(string(page.body), code) {
		t.Fatalf("confirm page:\n%s", page.body)
	}
	page = e.get("/auth/login?alias=link%40example.com")
	expectStatus(t, page, http.StatusOK)
	// The code is still good for the person who submits the form.
	r := e.postLogin(map[string]string{"alias": "link@example.com", "code": code})
	expectStatus(t, r, http.StatusSeeOther)
	sessionCookieOf(t, r)
}

func TestLoginPageNeedsASender(t *testing.T) {
	e := newEnv(t, withoutEmail())
	expectStatus(t, e.get("/auth/login"), http.StatusNotFound)
	expectStatus(t, e.get("/app", "Accept", "text/html"), http.StatusUnauthorized)
}
