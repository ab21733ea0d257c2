package passwordless

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// assertionClaimsOf verifies an assertion with the JWKS for aud and
// returns its claims, user claims included.
func assertionClaimsOf(t *testing.T, e *env, assertion, aud string) assertionClaims {
	t.Helper()
	verifyAssertion(t, e, assertion, aud)
	var c assertionClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAssertionTellsTheUpstreamWhoAndForWhichHost(t *testing.T) {
	e := newEnv(t, trustLoopback, withAnyHost(), withConfig(`assertion
		public /public/*
		jwt {
			issuer https://auth.example.com
		}`))
	tok := e.login("assert@example.com").str("token")
	id := tokenSubject(t, tok)

	// In Caddy: the upstream gets it, for the host the client asked for,
	// and never the client's.
	r := e.get("/app", "Authorization", "Bearer "+tok, "X-Auth-Assertion", "forged")
	expectStatus(t, r, http.StatusOK)
	inCaddy := e.upstream.lastHeader().Values("X-Auth-Assertion")
	if len(inCaddy) != 1 {
		t.Fatalf("the upstream got %q", inCaddy)
	}
	c := assertionClaimsOf(t, e, inCaddy[0], "localhost")
	if c.Subject != id || c.Email != "assert@example.com" || c.Issuer != "https://auth.example.com" || c.Roles != nil {
		t.Fatalf("claims %+v", c)
	}
	// From /check: the audience is the described host, lowercase, no port.
	r = e.check("X-Forwarded-Uri", "/app", "X-Forwarded-Host", "App.Example.COM:8443", "Authorization", "Bearer "+tok)
	expectStatus(t, r, http.StatusOK)
	a := r.header.Get("X-Auth-Assertion")
	if c := assertionClaimsOf(t, e, a, "app.example.com"); c.Subject != id {
		t.Fatalf("check's assertion names %q", c.Subject)
	}
	// Another host's backend refuses it.
	keys := jwksKeys(t, e.get("/auth/jwks.json").body)
	_, err := jwt.Parse(a, func(tok *jwt.Token) (any, error) { return keys[tok.Header["kid"].(string)], nil },
		jwt.WithAudience("localhost"), jwt.WithTimeFunc(clock.Now))
	if err == nil {
		t.Fatal("an assertion for app.example.com passed for localhost")
	}

	// Reused for 30 s per session and host, then signed anew.
	again := e.check("X-Forwarded-Uri", "/other", "X-Forwarded-Host", "app.example.com", "Authorization", "Bearer "+tok).header.Get("X-Auth-Assertion")
	if again != a {
		t.Fatal("a second request within 30 s was signed anew")
	}
	other := e.check("X-Forwarded-Uri", "/app", "X-Forwarded-Host", "app2.example.com", "Authorization", "Bearer "+tok).header.Get("X-Auth-Assertion")
	if other == a {
		t.Fatal("one assertion for two hosts")
	}
	clock.Advance(31 * time.Second)
	later := e.check("X-Forwarded-Uri", "/app", "X-Forwarded-Host", "app.example.com", "Authorization", "Bearer "+tok).header.Get("X-Auth-Assertion")
	if later == a {
		t.Fatal("an assertion served past 30 s")
	}
	assertionClaimsOf(t, e, later, "app.example.com")

	// A public path gets one without user claims, in Caddy and from /check.
	e.get("/public/x", "Authorization", "Bearer "+tok)
	if c := assertionClaimsOf(t, e, e.upstream.lastHeader().Get("X-Auth-Assertion"), "localhost"); c.Subject != "" || c.Email != "" {
		t.Fatalf("public path in Caddy: %+v", c)
	}
	r = e.check("X-Forwarded-Uri", "/public/x", "Authorization", "Bearer "+tok)
	if c := assertionClaimsOf(t, e, r.header.Get("X-Auth-Assertion"), "localhost"); c.Subject != "" || r.header.Get("X-Auth-User-Id") != "" {
		t.Fatalf("public path from /check: %+v", c)
	}

	// Never a credential, as bearer or cookie, on a route or an endpoint.
	for _, h := range [][]string{{"Authorization", "Bearer " + a}, {"Cookie", cookieName + "=" + a}} {
		if r := e.get("/app", append(h, "Accept", "application/json")...); r.status != http.StatusUnauthorized {
			t.Errorf("assertion as %s on a route: %d", h[0], r.status)
		}
		if r := e.check(append(h, "X-Forwarded-Uri", "/app", "X-Forwarded-Host", "app.example.com")...); r.status != http.StatusUnauthorized {
			t.Errorf("assertion as %s to /check: %d", h[0], r.status)
		}
	}
	if r := e.get("/auth/me", "Authorization", "Bearer "+a); r.status != http.StatusUnauthorized {
		t.Errorf("assertion to /me: %d", r.status)
	}
}

func TestAssertionOffDropsTheClientsCopy(t *testing.T) {
	e := newEnv(t, withConfig("public /public/*"))
	tok := e.login("off@example.com").str("token")
	for _, path := range []string{"/app", "/public/x"} {
		expectStatus(t, e.get(path, "Authorization", "Bearer "+tok, "X-Auth-Assertion", "forged", "X-Auth_Assertion", "forged"), http.StatusOK)
		for k := range e.upstream.lastHeader() {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Auth-Assertion") {
				t.Errorf("%s: the upstream got the client's %s", path, k)
			}
		}
	}
}

func TestAssertionCarriesCurrentRoles(t *testing.T) {
	e := newEnv(t, withConfig("assertion"))
	tok := e.login("roles@example.com").str("token")
	id := tokenSubject(t, tok)
	if err := e.store(t).SetRoles(t.Context(), id, []string{"finance", "admin"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * sessionRecheck)
	e.get("/app", "Authorization", "Bearer "+tok)
	c := assertionClaimsOf(t, e, e.upstream.lastHeader().Get("X-Auth-Assertion"), "localhost")
	if strings.Join(c.Roles, ",") != "admin,finance" {
		t.Fatalf("roles %q", c.Roles)
	}
}
