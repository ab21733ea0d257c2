package passwordless

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// benchJSON posts a JSON body, already encoded: encoding it is the
// client's work, as the form of BenchmarkExchange is.
func benchJSON(b testing.TB, p *Passwordless, path string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	if err := p.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkPasskeySignIn is a whole passkey sign-in, login begin and
// finish, to set beside BenchmarkExchange (a code's sign-in): the same
// session and tokens at the end. The authenticator's signing is left out,
// since the client does it.
func BenchmarkPasskeySignIn(b *testing.B) {
	for alg, cfg := range benchAlgorithms {
		b.Run(alg, func(b *testing.B) { benchPasskeySignIn(b, cfg) })
	}
}

// passkeyHolder gives p's store a user with one passkey, and answers the
// test authenticator and the key that sign for it.
func passkeyHolder(t testing.TB, p *Passwordless) (*softAuthenticator, *softKey) {
	u, err := p.store.CreateUser(t.Context(), p.Realm, []Alias{{Kind: KindEmail, Value: "x@example.com"}}, nil, now())
	if err != nil {
		t.Fatal(err)
	}
	k := &softKey{id: []byte("bench-credential"), userHandle: []byte(u.ID)}
	if k.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := p.store.AddPasskey(t.Context(), Passkey{Realm: p.Realm, ID: k.id, UserID: u.ID, PublicKey: k.cose(t),
		AAGUID: make([]byte, 16), Name: "bench", CreatedAt: now()}, 10); err != nil {
		t.Fatal(err)
	}
	return newSoftAuthenticator(t), k
}

func benchPasskeySignIn(b *testing.B, cfg string) {
	p := benchHandler(b, "passkeys {\n rp_id localhost\n origins http://localhost:9080\n}\n"+cfg)
	a, k := passkeyHolder(b, p)
	empty := []byte("{}")
	for b.Loop() {
		w := benchJSON(b, p, "/auth/passkeys/login/begin", empty)
		// What the client does between the two requests (read the
		// options, sign, encode the assertion) is not timed.
		b.StopTimer()
		var opts map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &opts); err != nil || w.Code != http.StatusOK {
			b.Fatalf("begin: %d %s", w.Code, w.Body)
		}
		body, err := json.Marshal(a.get(opts, k))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if w := benchJSON(b, p, "/auth/passkeys/login/finish", body); w.Code != http.StatusOK {
			b.Fatalf("finish: %d %s", w.Code, w.Body)
		}
	}
}

// BenchmarkPasskeySignatureCheck is the part of a passkey finish that an
// exchange has no counterpart for: the library's check of the
// authenticator's P-256 signature over the authenticator data and the
// client data's hash, from the stored COSE key, as the finish makes it.
// bench/passkeys.sh sets it beside the other two.
func BenchmarkPasskeySignatureCheck(b *testing.B) {
	a := newSoftAuthenticator(b)
	k := &softKey{id: []byte("bench-credential")}
	var err error
	if k.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		b.Fatal(err)
	}
	stored := k.cose(b)
	authData := a.authData(nil, 1, false)
	clientData := a.clientData("webauthn.get", "Y2hhbGxlbmdl")
	sig := a.sign(k, authData, clientData)
	h := sha256.Sum256(clientData)
	for b.Loop() {
		key, err := webauthncose.ParsePublicKey(stored)
		if err != nil {
			b.Fatal(err)
		}
		ok, err := webauthncose.VerifySignature(key, append(authData[:len(authData):len(authData)], h[:]...), sig)
		if err != nil || !ok {
			b.Fatalf("signature refused: %v", err)
		}
	}
}
