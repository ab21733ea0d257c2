package passwordless

import (
	"net/http/httptest"
	"testing"
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
