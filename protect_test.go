package passwordless

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestProtectedUpstreamLearnsUser(t *testing.T) {
	e := newEnv(t)
	tok := e.login("Reader@Example.com").str("token")

	r := e.get("/api/things", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	if r.str("email") != "reader@example.com" || r.str("id") == "" {
		t.Fatalf("upstream saw %s", r.body)
	}
	// The DRF scheme works too.
	expectStatus(t, e.get("/api/things", "Authorization", "Token "+tok), http.StatusOK)
}

func TestProtectedWithoutTokenIs401(t *testing.T) {
	e := newEnv(t)
	r := e.get("/api/things")
	expectStatus(t, r, http.StatusUnauthorized)
	if r.header.Get("WWW-Authenticate") != "Bearer" || r.str("detail") == "" {
		t.Fatalf("headers %v body %s", r.header, r.body)
	}
	if e.upstream.requests() != 0 {
		t.Fatal("an unauthenticated request reached the upstream")
	}
}

func TestForgedIdentityHeadersAreDropped(t *testing.T) {
	e := newEnv(t, withConfig("public /open/*"))
	tok := e.login("real@example.com").str("token")
	forged := []string{"X-Auth-User-Id", "admin", "X-Auth-User-Email", "admin@example.com", "X-Auth-User-Mobile", "+15550000000"}

	// Public route: no identity at all reaches the upstream.
	r := e.get("/open/page", forged...)
	expectStatus(t, r, http.StatusOK)
	if r.str("id") != "" || r.str("email") != "" || r.str("mobile") != "" {
		t.Fatalf("forged headers reached the upstream on a public route: %s", r.body)
	}
	// Protected route: only what the token says.
	r = e.get("/private", append(forged, bearer(tok)...)...)
	expectStatus(t, r, http.StatusOK)
	if r.str("email") != "real@example.com" || r.str("id") == "admin" || r.str("mobile") != "" {
		t.Fatalf("upstream saw %s", r.body)
	}
	if vals := e.upstream.lastHeader().Values("X-Auth-User-Id"); len(vals) != 1 {
		t.Fatalf("X-Auth-User-Id arrived %d times", len(vals))
	}

}

// Underscore spellings do not reach an upstream through Caddy today, but
// CGI and WSGI backends would read them as the identity headers, so the
// handler drops them itself rather than rely on that.
func TestDropIdentityHeadersVariants(t *testing.T) {
	h := http.Header{
		"X-Auth-User-Id":     {"a"},
		"X_auth_user_id":     {"b"},
		"x-auth-user_email":  {"c"},
		"X-AUTH-USER-MOBILE": {"d"},
		"X-Auth-User-Idx":    {"keep"},
		"X-Other":            {"keep"},
	}
	dropIdentityHeaders(h)
	if len(h) != 2 || h.Get("X-Auth-User-Idx") != "keep" || h.Get("X-Other") != "keep" {
		t.Fatalf("left %v", h)
	}
}

func TestProtectAndPublicPaths(t *testing.T) {
	e := newEnv(t, withConfig("protect /api/*\npublic /api/health"))
	expectStatus(t, e.get("/"), http.StatusOK)                    // not covered by protect
	expectStatus(t, e.get("/api/health"), http.StatusOK)          // public exception
	expectStatus(t, e.get("/api/users"), http.StatusUnauthorized) // protected
	r := e.do(http.MethodOptions, "/api/users", http.Header{"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"POST"}}, nil)
	expectStatus(t, r, http.StatusOK) // preflight passes to the upstream
}

func TestPlaceholdersAreSet(t *testing.T) {
	e := newEnv(t, withSite(`header >X-Seen-User "{http.auth.user.id}|{http.auth.user.email}"`))
	tok := e.login("ph@example.com").str("token")
	r := e.get("/x", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	if got := r.header.Get("X-Seen-User"); got != r.str("id")+"|ph@example.com" {
		t.Fatalf("placeholders gave %q", got)
	}
}

func TestBadTokensAre401(t *testing.T) {
	e := newEnv(t)
	tok := e.login("victim@example.com").str("token")
	parts := strings.Split(tok, ".")
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	b64 := base64.RawURLEncoding.EncodeToString

	tampered := parts[0] + "." + b64([]byte(strings.Replace(string(payload), "victim@", "admin@", 1))) + "." + parts[2]
	algNone := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	hsHeader := strings.Replace(string(header), `"EdDSA"`, `"HS256"`, 1)

	// A token signed by a key of the right type that is not ours.
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	var claims Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		t.Fatal(err)
	}
	foreign := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	foreignTok, _ := foreign.SignedString(otherKey)
	// An HS256 token "signed" with the public key bytes: alg confusion.
	hsTok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hsSigned, _ := hsTok.SignedString([]byte("some-shared-secret-that-is-long-enough!"))

	for name, bad := range map[string]string{
		"garbage":    "not.a.jwt",
		"tampered":   tampered,
		"alg none":   algNone,
		"foreign":    foreignTok,
		"hs256":      hsSigned,
		"hs header":  b64([]byte(hsHeader)) + "." + parts[1] + "." + parts[2],
		"no sig":     parts[0] + "." + parts[1] + ".",
		"empty":      "",
		"whitespace": "   ",
	} {
		r := e.get("/secret", "Authorization", "Bearer "+bad)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d", name, r.status)
		}
	}
	if e.upstream.requests() != 0 {
		t.Fatalf("%d bad tokens reached the upstream", e.upstream.requests())
	}
	expectStatus(t, e.get("/secret", bearer(tok)...), http.StatusOK)
}

func TestExpiredTokenIs401(t *testing.T) {
	e := newEnv(t, withConfig("jwt {\n ttl 5m\n}"))
	tok := e.login("exp@example.com").str("token")
	expectStatus(t, e.get("/x", bearer(tok)...), http.StatusOK) // now cached
	clock.Advance(5*time.Minute + time.Minute)
	r := e.get("/x", bearer(tok)...)
	expectStatus(t, r, http.StatusUnauthorized)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
}

func TestHS256(t *testing.T) {
	t.Setenv("PWL_TEST_JWT_SECRET", strings.Repeat("k", 32))
	e := newEnv(t, withConfig("jwt {\n algorithm HS256\n secret {env.PWL_TEST_JWT_SECRET}\n issuer https://example.com\n audience my-api\n}"))
	tok := e.login("hs@example.com").str("token")
	expectStatus(t, e.get("/x", bearer(tok)...), http.StatusOK)

	var c Claims
	parsed, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return []byte(strings.Repeat("k", 32)), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer("https://example.com"), jwt.WithAudience("my-api"))
	if err != nil || !parsed.Valid {
		t.Fatalf("token does not verify with the configured secret: %v", err)
	}
	if c.Email != "hs@example.com" || c.SessionID == "" || c.ID == "" || c.IssuedAt == nil || parsed.Header["kid"] == nil {
		t.Fatalf("claims %+v header %v", c, parsed.Header)
	}
	// A token with another audience is refused.
	c.Audience = jwt.ClaimStrings{"other-api"}
	other, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(strings.Repeat("k", 32)))
	expectStatus(t, e.get("/x", bearer(other)...), http.StatusUnauthorized)
}

func TestTokenSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	tok := e.login("stay@example.com").str("token")
	// A new config on the same database file: a restart, as far as the
	// plugin can tell (new handler, new cache, key read back from storage).
	e2 := newEnv(t, withDB(e.db), withSite(`header X-Config second`))
	r := e2.get("/x", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	if r.header.Get("X-Config") != "second" || r.str("email") != "stay@example.com" {
		t.Fatalf("after restart: %v %s", r.header, r.body)
	}
}

// The README's own recipe: `protect /admin/* { role admin }` must cover
// the admin page itself, in every spelling Caddy cleans to it, and
// `public /static/*` likewise covers /static.
func TestRulePathCoversItsDirectory(t *testing.T) {
	e := newEnv(t, withConfig("protect /admin/* {\n role admin\n}\nprotect /*\npublic /static/*"))
	tok := e.login("staff@example.com").str("token")
	for _, path := range []string{"/admin", "/ADMIN", "/admin/.", "/admin/x/..", "/admin/", "/admin/panel"} {
		if r := e.get(path, bearer(tok)...); r.status != http.StatusForbidden {
			t.Errorf("GET %s by a user without the role: %d, want 403", path, r.status)
		}
	}
	expectStatus(t, e.get("/reports", bearer(tok)...), http.StatusOK)
	for _, path := range []string{"/static", "/static/app.css"} {
		expectStatus(t, e.get(path), http.StatusOK)
	}
	expectStatus(t, e.get("/staticfiles"), http.StatusUnauthorized)
}

// A `*` request target matched no path, so with any rule block in place
// `POST * HTTP/1.1` without a token reached the upstream.
func TestAsteriskTargetIsRefused(t *testing.T) {
	e := newEnv(t, withConfig("protect /admin/* {\n role admin\n}\nprotect /*"))
	// (Go's server answers `OPTIONS *` itself, before any handler.)
	for _, method := range []string{"POST", "GET", "DELETE"} {
		conn, err := net.Dial("tcp", fmt.Sprintf("localhost:%d", testPort))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "%s * HTTP/1.1\r\nHost: localhost:%d\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", method, testPort)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		conn.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "detail") {
			t.Errorf("%s *: %d %s, want 400 with a detail", method, res.StatusCode, body)
		}
	}
	if n := e.upstream.requests(); n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
}
