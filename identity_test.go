package passwordless

import (
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// A validly signed token whose sid names another user's session speaks
// for nobody (security review, item 2).
func TestTokenOfAnotherUsersSessionIs401(t *testing.T) {
	secret := strings.Repeat("s", 32)
	e := newEnv(t, withConfig("jwt {\n algorithm HS256\n secret "+secret+"\n}"))
	alice := e.login("alice@example.com").str("token")
	bob := e.login("bob@example.com").str("token")
	key := func(*jwt.Token) (any, error) { return []byte(secret), nil }
	var a, b Claims
	parsed, err := jwt.ParseWithClaims(alice, &a, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.ParseWithClaims(bob, &b, key); err != nil {
		t.Fatal(err)
	}
	a.SessionID, a.ID = b.SessionID, "forged"
	forged := jwt.NewWithClaims(jwt.SigningMethodHS256, a)
	forged.Header["kid"] = parsed.Header["kid"]
	tok, err := forged.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	expectStatus(t, e.get("/app", bearer(alice)...), http.StatusOK)
	expectStatus(t, e.get("/app", bearer(tok)...), http.StatusUnauthorized)
	expectStatus(t, e.get("/auth/me", bearer(tok)...), http.StatusUnauthorized)
}

// What the upstream learns about the user is current to the session
// recheck, not what the token said when it was issued (security review,
// item 8): after the address moves to another account, the old one no
// longer reaches the upstream under the first user's id.
func TestUpstreamIdentityIsCurrent(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n}"))
	tok := e.login("old@example.com").str("token")
	r := e.get("/app", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	id := r.str("id")
	if r.str("email") != "old@example.com" {
		t.Fatalf("upstream saw %s", r.body)
	}

	// The user proves a new address; it replaces the old one.
	expectStatus(t, e.postForm("/auth/verify/email", map[string]string{"email": "new@example.com"}, bearer(tok)...), http.StatusOK)
	code := e.smtp.code(t, "new@example.com")
	expectStatus(t, e.postForm("/auth/verify", map[string]string{"email": "new@example.com", "token": code}, bearer(tok)...), http.StatusOK)
	// Someone else now owns the old address.
	other := e.login("old@example.com").str("token")

	clock.Advance(sessionRecheck)
	r = e.get("/app", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	if r.str("id") != id || r.str("email") != "new@example.com" {
		t.Fatalf("upstream saw %s for the first user; want its current address", r.body)
	}
	if r := e.get("/app", bearer(other)...); r.str("id") == id || r.str("email") != "old@example.com" {
		t.Fatalf("upstream saw %s for the new owner of the old address", r.body)
	}
}
