package passwordless

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// softKey is an authenticator's credential: an ECDSA P-256 key, bound to
// a relying party and a user handle, with its signature counter.
type softKey struct {
	id         []byte
	key        *ecdsa.PrivateKey
	userHandle []byte
	count      uint32
}

// softAuthenticator is a WebAuthn authenticator and client written for the
// tests: it makes credentials and assertions as a browser's toJSON()
// gives them, and each of its settings can be set wrong on purpose.
type softAuthenticator struct {
	t      testing.TB
	origin string
	rpID   string // whose hash goes into authenticator data
	// format is the attestation: "none" or "packed" (self attestation).
	format string
	uv     bool // user verified
	be, bs bool // backup eligible, backed up
	// counting makes each assertion count up from the last; otherwise
	// the counter stays at 0, as synced passkeys keep it.
	counting bool
	keys     map[string]*softKey
}

func newSoftAuthenticator(t testing.TB) *softAuthenticator {
	return &softAuthenticator{t: t, origin: testBase, rpID: "localhost", format: "none", uv: true, counting: true, keys: map[string]*softKey{}}
}

var b64 = base64.RawURLEncoding

func (a *softAuthenticator) authData(extra []byte, count uint32, attested bool) []byte {
	h := sha256.Sum256([]byte(a.rpID))
	flags := byte(0x01) // UP
	if a.uv {
		flags |= 0x04
	}
	if a.be {
		flags |= 0x08
	}
	if a.bs {
		flags |= 0x10
	}
	if attested {
		flags |= 0x40
	}
	out := append(h[:], flags)
	out = binary.BigEndian.AppendUint32(out, count)
	return append(out, extra...)
}

func (a *softAuthenticator) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.origin, "crossOrigin": false})
	return b
}

func (a *softAuthenticator) sign(k *softKey, authData, clientData []byte) []byte {
	h := sha256.Sum256(clientData)
	digest := sha256.Sum256(append(append([]byte{}, authData...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.key, digest[:])
	if err != nil {
		a.t.Fatal(err)
	}
	return sig
}

// cose is k's public key as a COSE key (EC2, ES256, P-256).
func (k *softKey) cose(t testing.TB) []byte {
	em, _ := cbor.CTAP2EncOptions().EncMode()
	x, y := make([]byte, 32), make([]byte, 32)
	k.key.PublicKey.X.FillBytes(x)
	k.key.PublicKey.Y.FillBytes(y)
	b, err := em.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// create answers creation options (the body of register/begin) with a new
// credential, as navigator.credentials.create() and toJSON() would.
func (a *softAuthenticator) create(options map[string]any) (map[string]any, *softKey) {
	a.t.Helper()
	pub := options["publicKey"].(map[string]any)
	user := pub["user"].(map[string]any)
	handle, err := b64.DecodeString(user["id"].(string))
	if err != nil {
		a.t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		a.t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	k := &softKey{id: id, key: key, userHandle: handle}
	a.keys[string(id)] = k
	return a.attest(k, pub["challenge"].(string)), k
}

// attest makes the registration response of k for challenge.
func (a *softAuthenticator) attest(k *softKey, challenge string) map[string]any {
	a.t.Helper()
	em, _ := cbor.CTAP2EncOptions().EncMode()
	cose := k.cose(a.t)
	aaguid := make([]byte, 16)
	cred := append(append(aaguid, byte(len(k.id)>>8), byte(len(k.id))), k.id...)
	authData := a.authData(append(cred, cose...), 0, true)
	cd := a.clientData("webauthn.create", challenge)
	stmt := map[string]any{}
	if a.format == "packed" {
		stmt = map[string]any{"alg": -7, "sig": a.sign(k, authData, cd)}
	}
	att, err := em.Marshal(map[string]any{"fmt": a.format, "attStmt": stmt, "authData": authData})
	if err != nil {
		a.t.Fatal(err)
	}
	return map[string]any{
		"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"authenticatorAttachment": "platform",
		"response": map[string]any{
			"clientDataJSON": b64.EncodeToString(cd), "attestationObject": b64.EncodeToString(att),
			"transports": []string{"internal", "hybrid"},
		},
		"clientExtensionResults": map[string]any{"credProps": map[string]any{"rk": true}},
	}
}

// get answers request options (the body of login/begin) with an assertion
// by k, as navigator.credentials.get() and toJSON() would.
func (a *softAuthenticator) get(options map[string]any, k *softKey) map[string]any {
	a.t.Helper()
	challenge := options["publicKey"].(map[string]any)["challenge"].(string)
	if a.counting {
		k.count++
	}
	authData := a.authData(nil, k.count, false)
	cd := a.clientData("webauthn.get", challenge)
	return map[string]any{
		"id": b64.EncodeToString(k.id), "rawId": b64.EncodeToString(k.id), "type": "public-key",
		"authenticatorAttachment": "platform",
		"response": map[string]any{
			"clientDataJSON": b64.EncodeToString(cd), "authenticatorData": b64.EncodeToString(authData),
			"signature": b64.EncodeToString(a.sign(k, authData, cd)), "userHandle": b64.EncodeToString(k.userHandle),
		},
		"clientExtensionResults": map[string]any{},
	}
}

const passkeysBlock = `passkeys {
	rp_id localhost
	rp_name "Example"
	origins http://localhost:9080
}`

// registerPasskey adds a passkey to the bearer's account through the API.
func (e *env) registerPasskey(a *softAuthenticator, token string) (*softKey, response) {
	e.t.Helper()
	r := e.postJSON("/auth/passkeys/register/begin", map[string]string{"name": "Laptop"}, bearer(token)...)
	expectStatus(e.t, r, http.StatusOK)
	cred, k := a.create(r.json)
	return k, e.postJSON("/auth/passkeys/register/finish", cred, bearer(token)...)
}

// passkeySignIn signs in with k through the API.
func (e *env) passkeySignIn(a *softAuthenticator, k *softKey) response {
	e.t.Helper()
	r := e.postJSON("/auth/passkeys/login/begin", map[string]any{})
	expectStatus(e.t, r, http.StatusOK)
	return e.postJSON("/auth/passkeys/login/finish", a.get(r.json, k))
}

// TestPasskeySignIn is the story: sign in once with a code, add a passkey,
// and from then on sign in with the passkey alone, to a session like any
// other.
func TestPasskeySignIn(t *testing.T) {
	logOpt, logPath := captureLog(t)
	e := newEnv(t, logOpt, withConfig(passkeysBlock))
	before := scrape(t)
	tok := e.login("ada@example.com").str("token")
	me := e.get("/auth/me", bearer(tok)...)

	r := e.postJSON("/auth/passkeys/register/begin", map[string]string{"name": "Laptop"}, bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	var opts struct {
		PublicKey struct {
			RP        struct{ ID, Name string }
			User      struct{ ID, Name, DisplayName string }
			Challenge string
			Params    []struct {
				Type string
				Alg  int
			} `json:"pubKeyCredParams"`
			Timeout                int
			ExcludeCredentials     []struct{ ID string } `json:"excludeCredentials"`
			AuthenticatorSelection struct {
				ResidentKey      string
				UserVerification string
			}
			Attestation string
			Extensions  map[string]any
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(r.body, &opts); err != nil {
		t.Fatal(err)
	}
	o := opts.PublicKey
	ch, _ := b64.DecodeString(o.Challenge)
	handle, _ := b64.DecodeString(o.User.ID)
	if o.RP.ID != "localhost" || o.RP.Name != "Example" || len(ch) != 32 || o.Timeout != 300000 ||
		o.User.Name != "ada@example.com" || string(handle) != me.str("id") || strings.Contains(string(handle), "ada") ||
		len(o.Params) != 3 || o.Params[0].Alg != -7 || o.Params[1].Alg != -8 || o.Params[2].Alg != -257 ||
		len(o.ExcludeCredentials) != 0 || o.AuthenticatorSelection.ResidentKey != "required" ||
		o.AuthenticatorSelection.UserVerification != "preferred" || o.Attestation != "none" || o.Extensions["credProps"] != true {
		t.Fatalf("creation options: %s", r.body)
	}
	a := newSoftAuthenticator(t)
	cred, k := a.create(r.json)
	r = e.postJSON("/auth/passkeys/register/finish", cred, bearer(tok)...)
	expectStatus(t, r, http.StatusCreated)
	id := b64.EncodeToString(k.id)
	if r.str("id") != id || r.str("name") != "Laptop" || r.json["last_used_at"] != nil || r.json["backed_up"] != false ||
		r.str("aaguid") != "00000000-0000-0000-0000-000000000000" || r.str("created_at") == "" {
		t.Fatalf("registered passkey: %s", r.body)
	}

	// Packed self attestation registers too; the first passkey is excluded.
	a.format = "packed"
	r = e.postJSON("/auth/passkeys/register/begin", map[string]string{}, bearer(tok)...)
	if ex, _ := r.json["publicKey"].(map[string]any)["excludeCredentials"].([]any); len(ex) != 1 || ex[0].(map[string]any)["id"] != id {
		t.Fatalf("the user's passkey is not excluded: %s", r.body)
	}
	cred, k2 := a.create(r.json)
	expectStatus(t, e.postJSON("/auth/passkeys/register/finish", cred, bearer(tok)...), http.StatusCreated)

	// Signing in: the options name no one, and the answer is /token's.
	r = e.postJSON("/auth/passkeys/login/begin", map[string]any{})
	expectStatus(t, r, http.StatusOK)
	pub := r.json["publicKey"].(map[string]any)
	if len(pub) != 4 || pub["rpId"] != "localhost" || pub["timeout"] != float64(300000) || pub["userVerification"] != "preferred" {
		t.Fatalf("request options: %s", r.body)
	}
	r = e.postJSON("/auth/passkeys/login/finish", a.get(r.json, k))
	expectStatus(t, r, http.StatusOK)
	if r.str("token_type") != "Bearer" || r.str("refresh_token") == "" || r.json["expires_in"] != float64(900) {
		t.Fatalf("token pair: %s", r.body)
	}
	pkTok, refresh := r.str("token"), r.str("refresh_token")
	if up := e.get("/app", bearer(pkTok)...); up.status != 200 || up.str("email") != "ada@example.com" {
		t.Fatalf("upstream with the passkey's token: %d %s", up.status, up.body)
	}
	expectStatus(t, e.passkeySignIn(a, k2), http.StatusOK)

	r = e.get("/auth/passkeys", bearer(tok)...)
	expectStatus(t, r, http.StatusOK)
	list := r.json["passkeys"].([]any)
	if len(list) != 2 {
		t.Fatalf("list: %s", r.body)
	}
	for _, v := range list {
		if pk := v.(map[string]any); pk["last_used_at"] == nil || (pk["id"] == id) != (pk["name"] == "Laptop") {
			t.Fatalf("list: %s", r.body)
		}
	}

	// A passkey's session is a session: refresh rotates, logout ends it.
	r = e.postForm("/auth/refresh", map[string]string{"refresh_token": refresh})
	expectStatus(t, r, http.StatusOK)
	pkTok = r.str("token")
	expectStatus(t, e.do(http.MethodPost, "/auth/logout", http.Header{"Authorization": {"Bearer " + pkTok}}, nil), http.StatusNoContent)
	expectStatus(t, e.get("/app", bearer(pkTok)...), http.StatusUnauthorized)
	// logout/all ends the passkey's sessions too.
	pkTok = e.passkeySignIn(a, k).str("token")
	expectStatus(t, e.do(http.MethodPost, "/auth/logout/all", http.Header{"Authorization": {"Bearer " + tok}}, nil), http.StatusNoContent)
	expectStatus(t, e.get("/app", bearer(pkTok)...), http.StatusUnauthorized)

	// The code went out long ago; a count of outbox_pending taken while it
	// was on its way may still show it until the next one.
	eventually(t, "outbox_pending to settle", func() bool { return scrape(t)[pendingEmail] == before[pendingEmail] })
	expectDeltas(t, deltas(before, scrape(t)), map[string]float64{
		`caddy_passwordless_codes_sent_total{channel="email",purpose="login"}`:  1,
		`caddy_passwordless_logins_total{channel="email",result="success"}`:     1,
		`caddy_passwordless_logins_total{channel="passkey",result="success"}`:   3,
		`caddy_passwordless_passkeys_registered_total{result="success"}`:        2,
		`caddy_passwordless_protected_requests_total{result="allowed"}`:         1,
		`caddy_passwordless_protected_requests_total{result="unauthenticated"}`: 2,
		`caddy_passwordless_delivery_seconds_count{channel="email"}`:            1,
	})

	raw, entries := readLog(t, logPath)
	var added, logins int
	for _, l := range entries {
		if l.str("logger") != auditLoggerFullName {
			continue
		}
		switch l.str("msg") {
		case auditPasskeyAdded:
			added++
			if l.str("passkey_id") == "" || l.str("user_id") != me.str("id") {
				t.Errorf("passkey added: %v", l)
			}
		case auditLogin:
			if l.str("channel") == "passkey" {
				logins++
				if l.str("passkey_id") == "" || l.str("session_id") == "" {
					t.Errorf("passkey login: %v", l)
				}
			}
		}
	}
	if added != 2 || logins != 3 {
		t.Errorf("audit: %d passkeys added, %d passkey logins", added, logins)
	}
	if strings.Contains(raw, o.Challenge) || strings.Contains(raw, "clientDataJSON") || strings.Contains(raw, pkTok) {
		t.Error("the log holds a challenge, client data or a token")
	}
}

// TestPasskeySignInRefusals presents every assertion SPEC refuses; each
// gets the same 400, whatever the reason.
func TestPasskeySignInRefusals(t *testing.T) {
	logOpt, logPath := captureLog(t)
	e := newEnv(t, logOpt, withConfig(passkeysBlock), withConfig("rate_limit {\n\tfailed_per_ip 100 1h\n}"))
	tok := e.login("ada@example.com").str("token")
	a := newSoftAuthenticator(t)
	k, r := e.registerPasskey(a, tok)
	expectStatus(t, r, http.StatusCreated)
	begin := func() map[string]any {
		r := e.postJSON("/auth/passkeys/login/begin", map[string]any{})
		expectStatus(t, r, http.StatusOK)
		return r.json
	}
	refused := func(what string, body any) {
		t.Helper()
		r := e.postJSON("/auth/passkeys/login/finish", body)
		if r.status != http.StatusBadRequest || string(r.body) != "{\"detail\":\"Passkey sign-in failed.\"}\n" {
			t.Errorf("%s: %d %s", what, r.status, r.body)
		}
	}
	withChallenge := func(ch []byte) map[string]any {
		return map[string]any{"publicKey": map[string]any{"challenge": b64.EncodeToString(ch)}}
	}

	// The two answers of login begin differ in their challenge only.
	b1, b2 := e.postJSON("/auth/passkeys/login/begin", map[string]any{}), e.postJSON("/auth/passkeys/login/begin", map[string]any{})
	p1, p2 := b1.json["publicKey"].(map[string]any), b2.json["publicKey"].(map[string]any)
	if p1["challenge"] == p2["challenge"] {
		t.Fatal("two sign-ins got the same challenge")
	}
	delete(p1, "challenge")
	delete(p2, "challenge")
	if j1, _ := json.Marshal(p1); string(j1) != func() string { j2, _ := json.Marshal(p2); return string(j2) }() {
		t.Fatalf("login begin answers differ: %s / %s", b1.body, b2.body)
	}

	// Another origin: the same host on another port, and another site.
	for _, origin := range []string{"http://localhost:9081", "https://localhost:9080", "http://evil.localhost:9080"} {
		a.origin = origin
		refused("origin "+origin, a.get(begin(), k))
	}
	a.origin = testBase
	a.rpID = "example.com"
	refused("RP ID", a.get(begin(), k))
	a.rpID = "localhost"

	// A challenge serves once, whatever the outcome.
	opts := begin()
	good := a.get(opts, k)
	expectStatus(t, e.postJSON("/auth/passkeys/login/finish", good), http.StatusOK)
	refused("replayed", good)
	refused("a used challenge, newly signed", a.get(opts, k))
	opts = begin()
	a.origin = "http://localhost:1"
	refused("bad origin", a.get(opts, k))
	a.origin = testBase
	refused("the challenge of a refused finish", a.get(opts, k))

	// Expired, forged, or a registration's challenge.
	opts = begin()
	clock.Advance(5*time.Minute + time.Second)
	refused("expired", a.get(opts, k))
	ch := make([]byte, 32)
	rand.Read(ch)
	refused("a challenge this server never made", a.get(withChallenge(ch), k))
	reg := e.postJSON("/auth/passkeys/register/begin", map[string]string{}, bearer(tok)...)
	refused("a registration's challenge", a.get(reg.json, k))

	// A forged signature, another user handle, nothing verified when it is
	// wanted, garbage.
	forged := a.get(begin(), k)
	sig, _ := b64.DecodeString(forged["response"].(map[string]any)["signature"].(string))
	sig[len(sig)-1] ^= 1
	forged["response"].(map[string]any)["signature"] = b64.EncodeToString(sig)
	refused("signature", forged)
	other := a.get(begin(), k)
	other["response"].(map[string]any)["userHandle"] = b64.EncodeToString([]byte("someone-else"))
	refused("user handle", other)
	refused("not a credential", map[string]string{"id": "x"})

	// The counter: presented again or lower is refused and audited, and
	// the stored value stays.
	expectStatus(t, e.passkeySignIn(a, k), http.StatusOK)
	k.count--
	a.counting = false
	refused("counter repeated", a.get(begin(), k))
	k.count -= 2
	refused("counter lower", a.get(begin(), k))
	k.count += 3
	a.counting = true
	expectStatus(t, e.passkeySignIn(a, k), http.StatusOK)

	// The backup flags may change after registration (iCloud).
	a.be, a.bs = true, true
	expectStatus(t, e.passkeySignIn(a, k), http.StatusOK)
	if list := e.get("/auth/passkeys", bearer(tok)...); !strings.Contains(string(list.body), `"backed_up":true`) {
		t.Fatalf("backup state not recorded: %s", list.body)
	}

	// A deleted passkey, and a disabled user's.
	k2, r := e.registerPasskey(a, tok)
	expectStatus(t, r, http.StatusCreated)
	expectStatus(t, e.do(http.MethodDelete, "/auth/passkeys/"+b64.EncodeToString(k.id), http.Header{"Authorization": {"Bearer " + tok}}, nil), http.StatusNoContent)
	refused("deleted passkey", a.get(begin(), k))
	s, err := openSQLite(e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	u, err := s.UserByAlias(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetDisabled(context.Background(), u.ID, true)
	refused("disabled user", a.get(begin(), k2))
	s.SetDisabled(context.Background(), u.ID, false)
	expectStatus(t, e.passkeySignIn(a, k2), http.StatusOK)
	s.DeleteUser(context.Background(), u.ID)
	refused("deleted user", a.get(begin(), k2))

	_, entries := readLog(t, logPath)
	var clones, failed int
	for _, l := range entries {
		if l.str("logger") != auditLoggerFullName {
			continue
		}
		switch l.str("msg") {
		case auditPasskeyCloneSuspected:
			clones++
			if l.str("passkey_id") != b64.EncodeToString(k.id) || l.str("user_id") != u.ID {
				t.Errorf("clone suspected: %v", l)
			}
		case auditLoginFailed:
			if l.str("channel") == "passkey" {
				failed++
			}
		}
	}
	if clones != 2 || failed < 17 {
		t.Errorf("audit: %d clones suspected, %d failed passkey logins", clones, failed)
	}
}

// TestPasskeyFailuresCountPerIP: failed finishes spend the client's
// failed_per_ip budget, then 429.
func TestPasskeyFailuresCountPerIP(t *testing.T) {
	e := newEnv(t, withConfig(passkeysBlock), withConfig("rate_limit {\n\tfailed_per_ip 3 1h\n}"))
	a := newSoftAuthenticator(t)
	k := &softKey{id: []byte("unknown-credential"), userHandle: []byte("x")}
	k.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i := range 3 {
		if r := e.passkeySignIn(a, k); r.status != http.StatusBadRequest {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := e.passkeySignIn(a, k)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("past the budget: %d %s", r.status, r.body)
	}
}

// TestPasskeyRegistrationRefusals: a registration serves its own session
// once, in time; a credential id is one account's; and the maximum holds.
func TestPasskeyRegistrationRefusals(t *testing.T) {
	e := newEnv(t, withConfig(strings.Replace(passkeysBlock, "}", "\tmax_per_user 2\n}", 1)))
	tok := e.login("ada@example.com").str("token")
	a := newSoftAuthenticator(t)
	finish := func(cred map[string]any, token string) response {
		return e.postJSON("/auth/passkeys/register/finish", cred, bearer(token)...)
	}
	beginReg := func(token string) map[string]any {
		r := e.postJSON("/auth/passkeys/register/begin", map[string]string{}, bearer(token)...)
		expectStatus(t, r, http.StatusOK)
		return r.json
	}

	expectStatus(t, e.postJSON("/auth/passkeys/register/begin", map[string]string{}), http.StatusUnauthorized)
	expectStatus(t, e.do(http.MethodPost, "/auth/passkeys/register/begin", http.Header{
		"Cookie": {cookieName + "=" + tok}, "Origin": {"https://evil.example"}, "Content-Type": {"application/json"},
	}, strings.NewReader("{}")), http.StatusForbidden)

	// Another session of the same user may not finish it.
	clock.Advance(time.Minute) // send_interval
	tok2 := e.login("ada@example.com").str("token")
	cred, _ := a.create(beginReg(tok))
	expectStatus(t, finish(cred, tok2), http.StatusBadRequest)
	expectStatus(t, finish(cred, tok), http.StatusBadRequest) // spent by the first finish

	// Expired.
	cred, _ = a.create(beginReg(tok))
	clock.Advance(5*time.Minute + time.Second)
	expectStatus(t, finish(cred, tok), http.StatusBadRequest)

	// Wrong origin, wrong RP ID.
	a.origin = "http://localhost:9081"
	cred, _ = a.create(beginReg(tok))
	expectStatus(t, finish(cred, tok), http.StatusBadRequest)
	a.origin, a.rpID = testBase, "example.com"
	cred, _ = a.create(beginReg(tok))
	expectStatus(t, finish(cred, tok), http.StatusBadRequest)
	a.rpID = "localhost"

	// Registered once; the same credential id for another user: 409.
	cred, k := a.create(beginReg(tok))
	expectStatus(t, finish(cred, tok), http.StatusCreated)
	expectStatus(t, finish(cred, tok), http.StatusBadRequest) // replayed
	bob := e.login("bob@example.com").str("token")
	r := e.postJSON("/auth/passkeys/register/begin", map[string]string{}, bearer(bob)...)
	ch := r.json["publicKey"].(map[string]any)["challenge"].(string)
	k.userHandle = []byte("bob")
	r = finish(a.attest(k, ch), bob)
	if r.status != http.StatusConflict || r.str("detail") == "" {
		t.Fatalf("a taken credential id: %d %s", r.status, r.body)
	}

	// The maximum: begin refuses once it is reached.
	cred, _ = a.create(beginReg(tok))
	expectStatus(t, finish(cred, tok), http.StatusCreated)
	r = e.postJSON("/auth/passkeys/register/begin", map[string]string{}, bearer(tok)...)
	if r.status != http.StatusBadRequest || !strings.Contains(r.str("detail"), "2 passkeys") {
		t.Fatalf("past max_per_user: %d %s", r.status, r.body)
	}

	// Rename and delete are the owner's only.
	id := b64.EncodeToString(k.id)
	patch := func(token, id, name string) response {
		return e.do(http.MethodPatch, "/auth/passkeys/"+id, http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}},
			strings.NewReader(`{"name":"`+name+`"}`))
	}
	if r := patch(tok, id, "Work laptop"); r.status != http.StatusOK || r.str("name") != "Work laptop" {
		t.Fatalf("rename: %d %s", r.status, r.body)
	}
	expectStatus(t, patch(tok, id, ""), http.StatusBadRequest)
	expectStatus(t, patch(bob, id, "Mine"), http.StatusNotFound)
	expectStatus(t, patch(tok, "bm9wZQ", "x"), http.StatusNotFound)
	expectStatus(t, e.do(http.MethodDelete, "/auth/passkeys/"+id, http.Header{"Authorization": {"Bearer " + bob}}, nil), http.StatusNotFound)
	expectStatus(t, e.do(http.MethodDelete, "/auth/passkeys/"+id, http.Header{"Authorization": {"Bearer " + tok}}, nil), http.StatusNoContent)
	expectStatus(t, e.do(http.MethodDelete, "/auth/passkeys/"+id, http.Header{"Authorization": {"Bearer " + tok}}, nil), http.StatusNotFound)
	expectStatus(t, e.get("/auth/passkeys"), http.StatusUnauthorized)
}

// TestPasskeysOff: without the block every passkey path is 404, and the
// sign-in page offers no passkey.
func TestPasskeysOff(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/auth/passkeys", "/auth/passkeys/login/begin", "/auth/passkeys/register/begin", "/auth/passkeys/abc"} {
		expectStatus(t, e.postJSON(path, map[string]any{}), http.StatusNotFound)
	}
	if page := e.get("/auth/login"); strings.Contains(string(page.body), "webauthn") || strings.Contains(string(page.body), "passkey") {
		t.Fatalf("the sign-in page offers passkeys: %s", page.body)
	}
}

// TestPasskeySignInForm: the sign-in page's POST with a `passkey` field
// gives a code's cookie and 303, or the form again with the error and,
// for a passkey unknown here, its id for the browser to forget.
func TestPasskeySignInForm(t *testing.T) {
	e := newEnv(t, withConfig(passkeysBlock))
	page := e.get("/auth/login?next=/app")
	for _, want := range []string{`autocomplete="username webauthn"`, `name="passkey"`, "Sign in with a passkey", `data-prefix="/auth"`, "isConditionalMediationAvailable"} {
		if !strings.Contains(string(page.body), want) {
			t.Fatalf("the sign-in page lacks %s", want)
		}
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'nonce-") {
		t.Fatalf("CSP: %s", csp)
	}
	tok := e.login("ada@example.com").str("token")
	a := newSoftAuthenticator(t)
	k, r := e.registerPasskey(a, tok)
	expectStatus(t, r, http.StatusCreated)
	assertion := func(k *softKey) string {
		b, _ := json.Marshal(a.get(e.postJSON("/auth/passkeys/login/begin", map[string]any{}).json, k))
		return string(b)
	}
	form := func(passkey string, origin string) response {
		return e.postForm("/auth/login", map[string]string{"passkey": passkey, "next": "/app/x"}, "Origin", origin)
	}

	expectStatus(t, form(assertion(k), "https://evil.example"), http.StatusForbidden)
	r = form(assertion(k), testBase)
	expectStatus(t, r, http.StatusSeeOther)
	if r.header.Get("Location") != "/app/x" || !strings.Contains(r.header.Get("Set-Cookie"), cookieName+"=") {
		t.Fatalf("signed in: %v", r.header)
	}
	cookie := strings.SplitN(r.header.Get("Set-Cookie"), ";", 2)[0]
	if up := e.get("/app/x", "Cookie", cookie); up.status != 200 || up.str("email") != "ada@example.com" {
		t.Fatalf("upstream with the cookie: %d %s", up.status, up.body)
	}
	// The account page lists the passkey to the cookie's user.
	if acc := e.get("/auth/account", "Cookie", cookie); acc.status != 200 || !strings.Contains(string(acc.body), "Laptop") ||
		!strings.Contains(string(acc.body), "ada@example.com") || !strings.Contains(string(acc.body), "Add a passkey") {
		t.Fatalf("account page: %d %s", acc.status, acc.body)
	}
	if acc := e.get("/auth/account"); acc.status != http.StatusFound || acc.header.Get("Location") != "/auth/login?next=%2Fauth%2Faccount" {
		t.Fatalf("account page signed out: %d %v", acc.status, acc.header)
	}

	// A failure: the form again, with the error, and the unknown id.
	stranger := &softKey{id: []byte("gone-credential"), userHandle: []byte("x")}
	stranger.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r = form(assertion(stranger), testBase)
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "Passkey sign-in failed.") ||
		!strings.Contains(string(r.body), `data-unknown="`+b64.EncodeToString(stranger.id)+`"`) {
		t.Fatalf("unknown passkey: %d %s", r.status, r.body)
	}
	r = form("{not json", testBase)
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "Passkey sign-in failed.") || !strings.Contains(string(r.body), `data-unknown=""`) {
		t.Fatalf("garbage: %d %s", r.status, r.body)
	}
}

// TestPasskeyOfSomeoneNoLongerAllowed: taken off the allow file, a user's
// passkey is refused as an unknown one within 5 seconds.
func TestPasskeyOfSomeoneNoLongerAllowed(t *testing.T) {
	people := filepath.Join(t.TempDir(), "people.txt")
	writeFile(t, people, "ada@example.com\nbob@example.com\n")
	e := newEnv(t, withConfig(passkeysBlock), withConfig("allow_file "+people))
	a := newSoftAuthenticator(t)
	k, r := e.registerPasskey(a, e.login("ada@example.com").str("token"))
	expectStatus(t, r, http.StatusCreated)
	expectStatus(t, e.passkeySignIn(a, k), http.StatusOK)
	writeFile(t, people, "bob@example.com\n")
	within5s(t, "ada's passkey refused", func() bool {
		r := e.passkeySignIn(a, k)
		if r.status != http.StatusOK && r.str("detail") != "Passkey sign-in failed." {
			t.Fatalf("refusal: %d %s", r.status, r.body)
		}
		return r.status == http.StatusBadRequest
	})
}

// TestPasskeyUserVerificationRequired: with user_verification required,
// a passkey used without the fingerprint, face or PIN is refused, at
// registration and at sign-in.
func TestPasskeyUserVerificationRequired(t *testing.T) {
	e := newEnv(t, withConfig(strings.Replace(passkeysBlock, "}", "\tuser_verification required\n}", 1)))
	tok := e.login("ada@example.com").str("token")
	a := newSoftAuthenticator(t)
	a.uv = false
	_, r := e.registerPasskey(a, tok)
	expectStatus(t, r, http.StatusBadRequest)
	a.uv = true
	k, r := e.registerPasskey(a, tok)
	expectStatus(t, r, http.StatusCreated)
	a.uv = false
	if r := e.passkeySignIn(a, k); r.status != http.StatusBadRequest || r.str("detail") != "Passkey sign-in failed." {
		t.Fatalf("without user verification: %d %s", r.status, r.body)
	}
	a.uv = true
	expectStatus(t, e.passkeySignIn(a, k), http.StatusOK)
	if r := e.postJSON("/auth/passkeys/login/begin", map[string]any{}); r.json["publicKey"].(map[string]any)["userVerification"] != "required" {
		t.Fatalf("request options: %s", r.body)
	}
}
