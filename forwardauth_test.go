package passwordless

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Apps behind another proxy that asks {prefix}/check: what people see
// there, whichever proxy it is (nginx's test is in nginx_test.go).

// readmeBlock is the fenced block of README.md in language lang that
// contains marker: the configs users copy are the ones tested.
func readmeBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(string(data), "```"+lang+"\n")[1:] {
		block, _, ok := strings.Cut(part, "\n```")
		if ok && strings.Contains(block, marker) {
			return block + "\n"
		}
	}
	t.Fatalf("README.md has no %s block with %q", lang, marker)
	return ""
}

// replaceAll applies old, new pairs to s, each of which must occur.
func replaceAll(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("the config has no %q:\n%s", pairs[i], s)
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// proxyEnv is the auth Caddy that another proxy asks: its check site
// answers whatever the Host, signed-out browsers go to its sign-in page.
func proxyEnv(t *testing.T) *env {
	return newEnv(t, trustLoopback, withAnyHost(), withConfig(`login_url `+testBase+`/auth/login
		assertion
		demo_user demo@example.com 135790
		public /public/*
		protect /admin/* {
			role admin
		}
		protect /*`))
}

// proxyStory is what people see of an app behind another proxy at base,
// which asks e's /check: the same outcomes as in Caddy.
func proxyStory(t *testing.T, e *env, base string) {
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}
	forged := []string{"X-Auth-User-Id", "admin", "X-Auth-User-Email", "admin@example.com", "X-Auth-User-Roles", "admin",
		"X-Auth-User-Mobile", "+15550000000", "X-Auth-Assertion", "forged", "X_Auth_User_Id", "admin"}
	seen := func(what string) http.Header {
		t.Helper()
		h := e.upstream.lastHeader()
		if h == nil {
			t.Fatalf("%s: the app got nothing", what)
		}
		return h
	}

	// A signed-out browser is sent to the sign-in, with the page it asked
	// for; never nginx's 500.
	page := "/app/page?x=1"
	res, body := get(page, "Accept", "text/html,application/xhtml+xml")
	want := testBase + "/auth/login?next=" + url.QueryEscape(base+page)
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != want {
		t.Fatalf("signed-out browser: %d to %q, want 302 to %q; %s", res.StatusCode, res.Header.Get("Location"), want, body)
	}
	// An API client gets the 401; neither reaches the app, forged
	// headers or not, whatever reading of the path.
	for _, path := range []string{"/app", "/public/../secret", "/public/%2e%2e/secret", "/public/%2E%2E/secret", "/public/..;/secret"} {
		res, body = get(path, append(forged, "Accept", "application/json")...)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("signed out, %s: status %d, want 401; %s", path, res.StatusCode, body)
		}
	}
	if n := e.upstream.requests(); n != 0 {
		t.Fatalf("the app was reached %d times while signed out", n)
	}

	// A public path: no identity, and never the client's.
	res, _ = get("/public/a.css", forged...)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("public path: status %d", res.StatusCode)
	}
	h := seen("public path")
	for _, name := range []string{"X-Auth-User-Id", "X-Auth-User-Email", "X-Auth-User-Roles", "X-Auth-User-Mobile", "X_auth_user_id"} {
		if v := h.Values(name); len(v) > 0 {
			t.Errorf("public path: the app got %s %q", name, v)
		}
	}
	if c := verifyAssertion(t, e, h.Get("X-Auth-Assertion"), "localhost"); c.Subject != "" {
		t.Errorf("public path: an assertion for %q", c.Subject)
	}

	// Signed in by bearer: who the user is, and nothing the client said.
	tr := e.postForm("/auth/token", map[string]string{"email": "demo@example.com", "token": "135790"})
	expectStatus(t, tr, http.StatusOK)
	tok := tr.str("token")
	id := tokenSubject(t, tok)
	res, body = get("/app", append(forged, "Authorization", "Bearer "+tok)...)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("signed in: status %d; %s", res.StatusCode, body)
	}
	h = seen("signed in")
	if h.Get("X-Auth-User-Id") != id || h.Get("X-Auth-User-Email") != "demo@example.com" || len(h.Values("X-Auth-User-Id")) != 1 {
		t.Fatalf("signed in: the app got id %q, email %q", h.Values("X-Auth-User-Id"), h.Get("X-Auth-User-Email"))
	}
	for _, name := range []string{"X-Auth-User-Roles", "X-Auth-User-Mobile", "X_auth_user_id"} {
		if v := h.Values(name); len(v) > 0 {
			t.Errorf("signed in: the app got %s %q", name, v)
		}
	}
	if c := verifyAssertion(t, e, h.Get("X-Auth-Assertion"), "localhost"); c.Subject != id {
		t.Errorf("signed in: an assertion for %q, want %q", c.Subject, id)
	}
	// A rule refuses: 403.
	if res, _ = get("/admin/users", "Authorization", "Bearer "+tok); res.StatusCode != http.StatusForbidden {
		t.Errorf("refused by a rule: status %d, want 403", res.StatusCode)
	}
	if res, _ = get("/docs/..;/admin/users", "Authorization", "Bearer "+tok); res.StatusCode != http.StatusForbidden {
		t.Errorf("refused by a rule under another reading: status %d, want 403", res.StatusCode)
	}

	// The browser signs in on the auth host and comes back with its cookie.
	r := e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790", "next": base + page})
	expectStatus(t, r, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != base+page {
		t.Fatalf("after sign-in to %q, want %q", loc, base+page)
	}
	cookie := sessionCookieOf(t, r)
	res, body = get(page, "Accept", "text/html", "Cookie", "theme=dark; "+cookie.Name+"="+cookie.Value)
	if res.StatusCode != http.StatusOK || seen("cookie").Get("X-Auth-User-Email") != "demo@example.com" {
		t.Fatalf("with the cookie: status %d; %s", res.StatusCode, body)
	}
}

// verifyAssertion checks an assertion as a backend would: signature by a
// key of jwks.json, audience its own host, at most 60 s of life.
func verifyAssertion(t *testing.T, e *env, assertion, aud string) jwt.RegisteredClaims {
	t.Helper()
	if assertion == "" {
		t.Fatal("no X-Auth-Assertion")
	}
	keys := jwksKeys(t, e.get("/auth/jwks.json").body)
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(assertion, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("kid %q is not in jwks.json", kid)
	}, jwt.WithAudience(aud), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithValidMethods([]string{"EdDSA", "ES256", "RS256"}),
		jwt.WithTimeFunc(clock.Now))
	if err != nil {
		t.Fatalf("assertion %s: %v", assertion, err)
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life > time.Minute || life <= 0 {
		t.Fatalf("assertion lives %s", life)
	}
	return c
}

// jwksKeys reads the public keys of a JWK set by kid.
func jwksKeys(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var set struct{ Keys []jwk }
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("jwks.json: %v: %s", err, body)
	}
	b64 := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out := map[string]any{}
	for _, k := range set.Keys {
		switch k.Kty {
		case "OKP":
			out[k.Kid] = ed25519.PublicKey(b64(k.X))
		case "EC":
			out[k.Kid] = &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b64(k.X)), Y: new(big.Int).SetBytes(b64(k.Y))}
		}
	}
	return out
}

// TestCaddyForwardAuth puts the app behind a second Caddy, configured as
// the README says, with the stock forward_auth directive.
func TestCaddyForwardAuth(t *testing.T) {
	e := proxyEnv(t)
	port := freePort(t)
	site := readmeBlock(t, "caddyfile", "forward_auth")
	caddyfile := "{\n\tadmin off\n}\n" + replaceAll(t, site,
		"app.example.com {", fmt.Sprintf("http://localhost:%d {", port),
		"127.0.0.1:8080", strings.TrimPrefix(e.upstream.URL, "http://"),
		"127.0.0.1:9000", fmt.Sprintf("127.0.0.1:%d", testPort))
	p := runCaddyProcess(t, caddyfile)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), p.out.String)
	proxyStory(t, e, fmt.Sprintf("http://localhost:%d", port))
}
