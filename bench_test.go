package passwordless

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// benchHandler provisions the handler outside a Caddy server, on a real
// SQLite file, with codes going to a silent log.
func benchHandler(b *testing.B, config string) *Passwordless {
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

func benchPost(b *testing.B, p *Passwordless, path string, form url.Values) *httptest.ResponseRecorder {
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
