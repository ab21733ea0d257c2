package passwordless

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestRefreshRotates(t *testing.T) {
	e := newEnv(t)
	first := e.login("rot@example.com")
	r := e.postJSON("/auth/refresh/", map[string]string{"refresh_token": first.str("refresh_token")})
	expectStatus(t, r, http.StatusOK)
	if r.str("token") == "" || r.str("token") == first.str("token") || r.str("refresh_token") == first.str("refresh_token") ||
		r.str("token_type") != "Bearer" || r.json["expires_in"] != float64(900) {
		t.Fatalf("refresh response %s", r.body)
	}
	second := r
	up := e.get("/app", bearer(second.str("token"))...)
	if up.str("email") != "rot@example.com" {
		t.Fatalf("upstream saw %s", up.body)
	}
	// The new refresh token rotates again; the old one is spent.
	third := e.postForm("/auth/refresh", map[string]string{"refresh_token": second.str("refresh_token")})
	expectStatus(t, third, http.StatusOK)
	expectStatus(t, e.get("/app", bearer(third.str("token"))...), http.StatusOK)

	// Presenting a spent refresh token means it was copied: the whole
	// session ends, the newest tokens included.
	reuse := e.postForm("/auth/refresh", map[string]string{"refresh_token": first.str("refresh_token")})
	expectStatus(t, reuse, http.StatusUnauthorized)
	expectStatus(t, e.get("/app", bearer(third.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": third.str("refresh_token")}), http.StatusUnauthorized)
}

func TestRefreshRejects(t *testing.T) {
	e := newEnv(t, withConfig("jwt {\n refresh_ttl 1h\n}"))
	tok := e.login("rr@example.com")
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": "made-up"}), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{}), http.StatusBadRequest)
	// An access token is not a refresh token.
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": tok.str("token")}), http.StatusUnauthorized)
	clock.Advance(time.Hour + time.Minute)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": tok.str("refresh_token")}), http.StatusUnauthorized)
}

func TestLogoutEndsOnlyThatSession(t *testing.T) {
	e := newEnv(t)
	a := e.login("two@example.com")
	clock.Advance(time.Minute) // past send_interval
	b := e.login("two@example.com")
	expectStatus(t, e.get("/app", bearer(a.str("token"))...), http.StatusOK) // cached as active

	r := e.do(http.MethodPost, "/auth/logout/", http.Header{"Authorization": {"Bearer " + a.str("token")}}, nil)
	expectStatus(t, r, http.StatusNoContent)

	expectStatus(t, e.get("/app", bearer(a.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.get("/auth/me", bearer(a.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": a.str("refresh_token")}), http.StatusUnauthorized)

	expectStatus(t, e.get("/app", bearer(b.str("token"))...), http.StatusOK)
	expectStatus(t, e.postForm("/auth/refresh", map[string]string{"refresh_token": b.str("refresh_token")}), http.StatusOK)

	expectStatus(t, e.do(http.MethodPost, "/auth/logout", nil, nil), http.StatusUnauthorized)
	r = e.get("/auth/me")
	expectStatus(t, r, http.StatusUnauthorized)
	if r.header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
}

// jwksKey finds the published key for a token's kid.
func jwksKey(t *testing.T, e *env, tok string) (map[string]any, any) {
	t.Helper()
	r := e.get("/auth/jwks.json")
	expectStatus(t, r, http.StatusOK)
	if !strings.Contains(r.header.Get("Content-Type"), "json") {
		t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
	}
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(r.body, &set); err != nil {
		t.Fatal(err)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &Claims{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
			if _, ok := k[private]; ok {
				t.Fatalf("JWKS publishes private member %q", private)
			}
		}
		if k["kid"] == parsed.Header["kid"] {
			return k, publicFromJWK(t, k)
		}
	}
	t.Fatalf("no key with kid %v in %s", parsed.Header["kid"], r.body)
	return nil, nil
}

func publicFromJWK(t *testing.T, k map[string]any) any {
	b := func(name string) []byte {
		v, err := base64.RawURLEncoding.DecodeString(k[name].(string))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	switch k["kty"] {
	case "OKP":
		return ed25519.PublicKey(b("x"))
	case "EC":
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b("x")), Y: new(big.Int).SetBytes(b("y"))}
	case "RSA":
		return &rsa.PublicKey{N: new(big.Int).SetBytes(b("n")), E: int(new(big.Int).SetBytes(b("e")).Int64())}
	}
	t.Fatalf("unknown kty %v", k["kty"])
	return nil
}

func TestJWKSVerifiesTokens(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256", "RS256"} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t, withConfig("jwt {\n algorithm "+alg+"\n}"))
			tok := e.login("jwks-" + strings.ToLower(alg) + "@example.com").str("token")
			expectStatus(t, e.get("/app", bearer(tok)...), http.StatusOK)
			k, pub := jwksKey(t, e, tok)
			if k["alg"] != alg || k["use"] != "sig" {
				t.Fatalf("JWK %v", k)
			}
			parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{alg}))
			if err != nil || !parsed.Valid {
				t.Fatalf("token does not verify with the published key: %v", err)
			}
		})
	}
	t.Run("HS256", func(t *testing.T) {
		e := newEnv(t, withConfig("jwt {\n algorithm HS256\n secret "+strings.Repeat("z", 40)+"\n}"))
		r := e.get("/auth/jwks.json")
		expectStatus(t, r, http.StatusOK)
		if strings.TrimSpace(string(r.body)) != `{"keys":[]}` {
			t.Fatalf("HS256 JWKS %s", r.body)
		}
	})
}

func writeKey(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestKeyRotation(t *testing.T) {
	_, oldKey, _ := ed25519.GenerateKey(rand.Reader)
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	oldFile, newFile := writeKey(t, oldKey), writeKey(t, newKey)

	e := newEnv(t, withConfig("jwt {\n key_file "+oldFile+"\n}"))
	oldTok := e.login("rotate@example.com")
	_, pub := jwksKey(t, e, oldTok.str("token"))
	if !pub.(ed25519.PublicKey).Equal(oldKey.Public()) {
		t.Fatal("the published key is not the configured one")
	}

	// Rotation: the new key signs, the old one still verifies.
	e = newEnv(t, withDB(e.db), withConfig("jwt {\n key_file "+newFile+" "+oldFile+"\n}"))
	expectStatus(t, e.get("/app", bearer(oldTok.str("token"))...), http.StatusOK)
	r := e.postForm("/auth/refresh", map[string]string{"refresh_token": oldTok.str("refresh_token")})
	expectStatus(t, r, http.StatusOK)
	_, pub = jwksKey(t, e, r.str("token"))
	if !pub.(ed25519.PublicKey).Equal(newKey.Public()) {
		t.Fatal("new tokens are not signed with the first key")
	}
	var set struct{ Keys []any }
	json.Unmarshal(e.get("/auth/jwks.json").body, &set)
	if len(set.Keys) != 2 {
		t.Fatalf("JWKS has %d keys during rotation, want 2", len(set.Keys))
	}

	// The old key retired: its tokens are refused.
	e = newEnv(t, withDB(e.db), withConfig("jwt {\n key_file "+newFile+"\n}"))
	expectStatus(t, e.get("/app", bearer(oldTok.str("token"))...), http.StatusUnauthorized)
	expectStatus(t, e.get("/app", bearer(r.str("token"))...), http.StatusOK)
}

func TestKeyFileMustFitAlgorithm(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	f := writeKey(t, rsaKey)
	if _, err := loadKeys(t.Context(), &JWTConfig{Algorithm: "EdDSA", KeyFiles: []string{f}}, nil, defaultRealm); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("an RSA key was taken for EdDSA: %v", err)
	}
}

func TestVerifyLinksMobile(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, smsBlock(t, tw, ""))
	tok := e.login("link@example.com").str("token")
	auth := bearer(tok)

	r := e.postForm("/auth/verify/mobile/", map[string]string{"mobile": "+15551230000"}, auth...)
	expectStatus(t, r, http.StatusOK)
	code := tw.code(t, "+15551230000")
	// Without the bearer the code proves nothing.
	expectStatus(t, e.postForm("/auth/verify/", map[string]string{"mobile": "+15551230000", "token": code}), http.StatusUnauthorized)
	r = e.postForm("/auth/verify/", map[string]string{"mobile": "+15551230000", "token": code}, auth...)
	expectStatus(t, r, http.StatusOK)

	me := e.get("/auth/me", auth...)
	if me.str("mobile") != "+15551230000" || me.json["mobile_verified"] != true || me.str("email") != "link@example.com" {
		t.Fatalf("/me %s", me.body)
	}
	clock.Advance(time.Minute) // send_interval counts codes of every purpose
	// Logging in by the linked number reaches the same account.
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551230000"}), http.StatusOK)
	byMobile := e.postForm("/auth/token/", map[string]string{"mobile": "+15551230000", "token": tw.code(t, "+15551230000")})
	expectStatus(t, byMobile, http.StatusOK)
	if e.get("/auth/me", bearer(byMobile.str("token"))...).str("id") != me.str("id") {
		t.Fatal("the linked number logs into another account")
	}
}

func TestVerifyConflictIs409(t *testing.T) {
	e := newEnv(t)
	owner := e.login("owner@example.com")
	other := e.login("other@example.com")
	clock.Advance(time.Minute) // send_interval counts codes of every purpose

	expectStatus(t, e.postForm("/auth/verify/email", map[string]string{"email": "owner@example.com"}, bearer(other.str("token"))...), http.StatusOK)
	code := e.smtp.code(t, "owner@example.com")
	r := e.postForm("/auth/verify", map[string]string{"email": "owner@example.com", "token": code}, bearer(other.str("token"))...)
	expectStatus(t, r, http.StatusConflict)
	if r.str("detail") == "" {
		t.Fatalf("body %s", r.body)
	}
	// Never moved.
	if e.get("/auth/me", bearer(owner.str("token"))...).str("email") != "owner@example.com" ||
		e.get("/auth/me", bearer(other.str("token"))...).str("email") != "other@example.com" {
		t.Fatal("the address moved")
	}
}

func TestVerifyCodeIsNotALoginCode(t *testing.T) {
	e := newEnv(t)
	user := e.login("acct@example.com")
	auth := bearer(user.str("token"))

	expectStatus(t, e.postForm("/auth/verify/email", map[string]string{"email": "new@example.com"}, auth...), http.StatusOK)
	verifyCode := e.smtp.code(t, "new@example.com")
	// A verify code cannot log anybody in...
	expectStatus(t, e.postForm("/auth/token", map[string]string{"email": "new@example.com", "token": verifyCode}), http.StatusBadRequest)

	// ...and a login code cannot verify.
	clock.Advance(time.Minute)
	expectStatus(t, e.postForm("/auth/email", map[string]string{"email": "new@example.com"}), http.StatusOK)
	loginCode := e.smtp.code(t, "new@example.com")
	expectStatus(t, e.postForm("/auth/verify", map[string]string{"email": "new@example.com", "token": loginCode}, auth...), http.StatusBadRequest)
}

func TestVerifyCodeBelongsToTheAccountThatAsked(t *testing.T) {
	e := newEnv(t)
	asker := e.login("asker@example.com")
	thief := e.login("thief@example.com")
	expectStatus(t, e.postForm("/auth/verify/email", map[string]string{"email": "shared@example.com"}, bearer(asker.str("token"))...), http.StatusOK)
	code := e.smtp.code(t, "shared@example.com")
	expectStatus(t, e.postForm("/auth/verify", map[string]string{"email": "shared@example.com", "token": code}, bearer(thief.str("token"))...), http.StatusBadRequest)
	if e.get("/auth/me", bearer(thief.str("token"))...).str("email") != "thief@example.com" {
		t.Fatal("the thief got the address")
	}
}

// With several keys, a token must name its key: one without a kid, or with
// an unknown one, is refused even though its signature is good.
func TestSeveralKeysNeedKid(t *testing.T) {
	first, second := strings.Repeat("a", 32), strings.Repeat("b", 32)
	ks, err := loadKeys(t.Context(), &JWTConfig{Algorithm: "HS256", Secrets: []string{first, second}}, nil, defaultRealm)
	if err != nil {
		t.Fatal(err)
	}
	claims := &Claims{SessionID: "s", RegisteredClaims: jwt.RegisteredClaims{Subject: "u",
		IssuedAt: jwt.NewNumericDate(now()), ExpiresAt: jwt.NewNumericDate(now().Add(time.Minute))}}
	good, err := ks.sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.verify(good); err != nil {
		t.Fatalf("a token with its kid: %v", err)
	}
	for name, kid := range map[string]any{"no kid": nil, "unknown kid": "nope"} {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		if kid != nil {
			tok.Header["kid"] = kid
		}
		signed, _ := tok.SignedString([]byte(first))
		if _, err := ks.verify(signed); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A verification code for an alias outside the allow list is answered as
// any other, and nothing is sent, as for a login code; no code makes the
// alias the account's.
func TestVerifyHonoursTheAllowList(t *testing.T) {
	e := newEnv(t, withConfig("allow *@example.com"))
	auth := bearer(e.login("acct@example.com").str("token"))
	inside := e.postForm("/auth/verify/email", map[string]string{"email": "second@example.com"}, auth...)
	outside := e.postForm("/auth/verify/email", map[string]string{"email": "someone@other.test"}, auth...)
	expectStatus(t, outside, http.StatusOK)
	if string(outside.body) != string(inside.body) {
		t.Fatalf("answers differ: %s and %s", inside.body, outside.body)
	}
	e.drain()
	for _, m := range e.smtp.all() {
		if m.To == "someone@other.test" {
			t.Fatal("a verification code was sent outside the allow list")
		}
	}
	e.smtp.code(t, "second@example.com")
	for _, code := range []string{"000000", "123456"} {
		expectStatus(t, e.postForm("/auth/verify", map[string]string{"email": "someone@other.test", "token": code}, auth...), http.StatusBadRequest)
	}
	if got := e.get("/auth/me", auth...).str("email"); got != "acct@example.com" {
		t.Fatalf("me: %s", got)
	}
}
