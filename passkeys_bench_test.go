package passwordless

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchJSON posts a JSON body, already encoded: encoding it is the
// client's work, as the form of BenchmarkExchange is.
func benchJSON(b *testing.B, p *Passwordless, path string, body []byte) *httptest.ResponseRecorder {
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

func benchPasskeySignIn(b *testing.B, cfg string) {
	p := benchHandler(b, "passkeys {\n rp_id localhost\n origins http://localhost:9080\n}\n"+cfg)
	u, err := p.store.CreateUser(b.Context(), p.Realm, []Alias{{Kind: KindEmail, Value: "x@example.com"}}, nil, now())
	if err != nil {
		b.Fatal(err)
	}
	a := newSoftAuthenticator(b)
	k := &softKey{id: []byte("bench-credential"), userHandle: []byte(u.ID)}
	if k.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		b.Fatal(err)
	}
	if err := p.store.AddPasskey(b.Context(), Passkey{Realm: p.Realm, ID: k.id, UserID: u.ID, PublicKey: k.cose(b),
		AAGUID: make([]byte, 16), Name: "bench", CreatedAt: now()}, 10); err != nil {
		b.Fatal(err)
	}
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
