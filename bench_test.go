package passwordless

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// benchHandler provisions the handler outside a Caddy server, on a real
// SQLite file, with codes going to a silent log.
func benchHandler(b testing.TB, config string) *Passwordless {
	b.Helper()
	var p Passwordless
	d := caddyfile.NewTestDispenser("passwordless {\n email {\n log\n }\n rate_limit {\n send_interval 0s\n per_alias 1000000 1h\n per_ip 1000000 1h\n }\n" + config + "\n}")
	if err := p.UnmarshalCaddyfile(d); err != nil {
		b.Fatal(err)
	}
	p.Storage = &StorageConfig{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "bench.db")}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: b.Context()})
	b.Cleanup(cancel)
	if err := p.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Cleanup() })
	p.logger = zap.NewNop()
	p.senders[KindEmail].(*emailSender).log.logger = zap.NewNop()
	return &p
}

func benchPost(b testing.TB, p *Passwordless, path string, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	if err := p.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkCodeRequest is POST /auth/email: limits, code, HMAC, store.
func BenchmarkCodeRequest(b *testing.B) {
	p := benchHandler(b, "")
	i := 0
	for b.Loop() {
		i++
		if w := benchPost(b, p, "/auth/email", url.Values{"email": {fmt.Sprintf("u%d@example.com", i)}}); w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkFailedExchange is a wrong guess at POST /auth/token: lockout
// check, redeem, failure count.
func BenchmarkFailedExchange(b *testing.B) {
	p := benchHandler(b, "")
	i := 0
	for b.Loop() {
		i++
		w := benchPost(b, p, "/auth/token", url.Values{"email": {fmt.Sprintf("u%d@example.com", i)}, "token": {"123456"}})
		if w.Code != http.StatusBadRequest {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// benchToken logs a demo user in and returns its access token.
func benchToken(b testing.TB, p *Passwordless) string {
	w := benchPost(b, p, "/auth/token", url.Values{"email": {"bench@example.com"}, "token": {"246810"}})
	if w.Code != http.StatusOK {
		b.Fatalf("login: %d %s", w.Code, w.Body)
	}
	var resp tokenResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		b.Fatal(err)
	}
	return resp.Token
}

var benchAlgorithms = map[string]string{
	"EdDSA": "",
	"HS256": "jwt {\n algorithm HS256\n secret " + strings.Repeat("b", 32) + "\n}",
}

// BenchmarkValidateToken is the check on a protected route: a cache hit
// costs two map lookups; a miss checks the signature (and the session).
func BenchmarkValidateToken(b *testing.B) {
	for alg, cfg := range benchAlgorithms {
		b.Run(alg+"/hit", func(b *testing.B) {
			p := benchHandler(b, "demo_user bench@example.com 246810\n"+cfg)
			tok := benchToken(b, p)
			ctx := b.Context()
			for b.Loop() {
				if c, _, reason := p.checkToken(ctx, tok); c == nil {
					b.Fatal(reason)
				}
			}
		})
		b.Run(alg+"/miss", func(b *testing.B) {
			p := benchHandler(b, "demo_user bench@example.com 246810\n"+cfg)
			tok := benchToken(b, p)
			for b.Loop() {
				if _, err := p.keys.verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// browserCookies is the Cookie header a browser sends an app of a domain:
// analytics, a consent record and another app's 2 KB session around ours,
// about 2.7 KB in all.
func browserCookies(session string) string {
	return "_ga=GA1.1.1234567890.1700000000; _ga_ABCDEF1234=GS1.1.1700000000.12.1.1700000100.0.0.0; " +
		"consent=%7B%22necessary%22%3Atrue%2C%22analytics%22%3Atrue%7D; other_app_session=" + strings.Repeat("Zm9v", 500) +
		"; " + session + "; theme=dark; lang=en-GB; _gid=GA1.2.987654321.1700000000; csrftoken=" + strings.Repeat("x", 64)
}

// BenchmarkProtectedRequest is the whole handler on a protected route
// with a valid token, by bearer or in a browser's cookies, the next
// handler doing nothing.
func BenchmarkProtectedRequest(b *testing.B) {
	for alg, cfg := range benchAlgorithms {
		for _, creds := range []string{"bearer", "cookie"} {
			b.Run(alg+"/"+creds, func(b *testing.B) {
				p := benchHandler(b, "demo_user bench@example.com 246810\n"+cfg)
				tok := benchToken(b, p)
				next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
				cookies := browserCookies(cookieName + "=" + tok)
				for b.Loop() {
					r := httptest.NewRequest(http.MethodGet, "/api/things", nil)
					if creds == "bearer" {
						r.Header.Set("Authorization", "Bearer "+tok)
					} else {
						r.Header.Set("Cookie", cookies)
					}
					repl := caddy.NewReplacer()
					r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
					w := httptest.NewRecorder()
					if err := p.ServeHTTP(w, r, next); err != nil || w.Code != http.StatusOK {
						b.Fatalf("%v %d", err, w.Code)
					}
				}
			})
		}
	}
}

// BenchmarkCheck is {prefix}/check asked by a trusted proxy about a
// browser's request with its cookies, as Caddy's forward_auth asks.
func BenchmarkCheck(b *testing.B) {
	for alg, cfg := range benchAlgorithms {
		b.Run(alg, func(b *testing.B) {
			p := benchHandler(b, "demo_user bench@example.com 246810\n"+cfg)
			tok := benchToken(b, p)
			cookies := browserCookies(cookieName + "=" + tok)
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, "/auth/check", nil)
				r.Header.Set("X-Forwarded-Method", "GET")
				r.Header.Set("X-Forwarded-Uri", "/api/things?page=2")
				r.Header.Set("X-Forwarded-Host", "app.example.com")
				r.Header.Set("X-Forwarded-Proto", "http")
				r.Header.Set("Cookie", cookies)
				ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
				ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: true})
				w := httptest.NewRecorder()
				if err := p.ServeHTTP(w, r.WithContext(ctx), nil); err != nil || w.Code != http.StatusOK {
					b.Fatalf("%v %d %s", err, w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkExchange is a successful POST /auth/token: redeem the code,
// find the user, create the session, sign the tokens.
func BenchmarkExchange(b *testing.B) {
	for alg, cfg := range benchAlgorithms {
		b.Run(alg, func(b *testing.B) {
			p := benchHandler(b, cfg)
			a := Alias{Kind: KindEmail, Value: "x@example.com"}
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				code := fmt.Sprintf("%06d", i%1000000)
				t := now()
				if err := storeSQL(p.store).SaveCode(b.Context(), Code{ID: fmt.Sprint(i), Alias: a.Key(), Purpose: purposeLogin,
					Hash: codeHash(p.hmacKey, a.Key(), purposeLogin, code), ExpiresAt: t.Add(time.Minute), CreatedAt: t}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if w := benchPost(b, p, "/auth/token", url.Values{"email": {a.Value}, "token": {code}}); w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkExchangeParallel is BenchmarkExchange with 8 clients at once,
// each for an address of its own, as bench/logins.sh's exchange phase: it
// shows what the writer's queue costs, and what sharing commits saves.
func BenchmarkExchangeParallel(b *testing.B) {
	p := benchHandler(b, benchAlgorithms["EdDSA"])
	type pending struct{ email, code string }
	codes := make(chan pending, b.N)
	for i := range b.N {
		a := Alias{Kind: KindEmail, Value: fmt.Sprintf("p%d@example.com", i)}
		code := fmt.Sprintf("%06d", i%1000000)
		t := now()
		if err := storeSQL(p.store).SaveCode(b.Context(), Code{ID: fmt.Sprint(i), Alias: a.Key(), Purpose: purposeLogin,
			Hash: codeHash(p.hmacKey, a.Key(), purposeLogin, code), ExpiresAt: t.Add(time.Hour), CreatedAt: t}); err != nil {
			b.Fatal(err)
		}
		codes <- pending{a.Value, code}
	}
	b.SetParallelism(4) // 8 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := <-codes
			if w := benchPost(b, p, "/auth/token", url.Values{"email": {c.email}, "token": {c.code}}); w.Code != http.StatusOK {
				b.Errorf("%d %s", w.Code, w.Body)
				return
			}
		}
	})
}

// BenchmarkStoreSignIn is the store's part of a new user's successful
// exchange on SQLite (Store.SignIn, one write transaction, committed
// alone): the part that runs in the one writer, so what bounds the
// exchanges a second that SQLite can take.
func BenchmarkStoreSignIn(b *testing.B) {
	s := tempSQLite(b, "signin.db")
	ctx := context.Background()
	t0 := now()
	hash := []byte("0123456789abcdef0123456789abcdef")
	match := func(h []byte) bool { return string(h) == string(hash) }
	const ahead = 512 // codes are stored in rounds, outside the timer
	i := 0
	for b.Loop() {
		if i%ahead == 0 {
			b.StopTimer()
			for j := i; j < i+ahead; j++ {
				a := Alias{Kind: KindEmail, Value: fmt.Sprintf("s%d@example.com", j)}
				if err := storeSQL(s).SaveCode(ctx, Code{ID: fmt.Sprint("c", j), Alias: a.Key(), Purpose: purposeLogin,
					Hash: hash, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		a := Alias{Kind: KindEmail, Value: fmt.Sprintf("s%d@example.com", i)}
		id, err := randomID() // random keys, as real sessions have
		if err != nil {
			b.Fatal(err)
		}
		res, err := s.SignIn(ctx, SignIn{Realm: defaultRealm, Alias: a, Key: a.Key(), Match: match, MaxAttempts: 5, Create: true,
			Session:     Session{ID: id, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)},
			RefreshHash: opaqueHash(id)}, t0)
		if err != nil || res.Code != CodeOK || !res.Created {
			b.Fatalf("%+v %v", res, err)
		}
		i++
	}
}
