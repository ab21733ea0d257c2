package passwordless

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The seed corpora below run as ordinary tests with `go test`; run a
// target for longer with e.g. `go test -fuzz FuzzReadFields`.

func FuzzReadFields(f *testing.F) {
	for _, s := range []struct{ ct, body string }{
		{"application/json", `{"email": "a@example.com"}`},
		{"application/json", `{"email": null, "mobile": "+15551234567"}`},
		{"application/json", "{\"email\": \"\xff\"}"},
		{"application/x-www-form-urlencoded", "email=a%40example.com&token=123456"},
		{"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@example.com\r\n--b--\r\n"},
		{"", `{"token": 5}`},
		{"text/plain", "x"},
	} {
		f.Add(s.ct, s.body)
	}
	f.Fuzz(func(t *testing.T, ct, body string) {
		r := httptest.NewRequest(http.MethodPost, "/auth/token", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		fields, e := readFields(httptest.NewRecorder(), r, "email", "mobile", "token")
		if e != nil {
			switch e.status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			default:
				t.Fatalf("status %d for bad input", e.status)
			}
			return
		}
		for k, v := range fields {
			if k != "email" && k != "mobile" && k != "token" {
				t.Fatalf("unknown field %q accepted", k)
			}
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				t.Fatalf("bad value %q accepted", v)
			}
		}
	})
}

func FuzzNormalizeAlias(f *testing.F) {
	for _, s := range []string{"Aaron@Example.com", " a@b.co ", "a@b", "\"q\"@example.com", "a@example.com\r\nBcc: x",
		"+1 (555) 123-4567", "+15551234567", "0044 20 7946 0000", "+", "+0123"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if e, err := normalizeEmail(s); err == nil {
			if strings.ContainsAny(e, "\r\n\x00 <>") || e != strings.ToLower(e) || len(e) > maxEmailLen {
				t.Fatalf("normalizeEmail(%q) = %q", s, e)
			}
			if again, err := normalizeEmail(e); err != nil || again != e {
				t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, e, again, err)
			}
		}
		if m, err := normalizeMobile(s); err == nil {
			if !e164.MatchString(m) {
				t.Fatalf("normalizeMobile(%q) = %q", s, m)
			}
			if again, err := normalizeMobile(m); err != nil || again != m {
				t.Fatalf("not idempotent: %q -> %q -> %q", s, m, again)
			}
		}
	})
}

func FuzzVerifyToken(f *testing.F) {
	ks, err := loadKeys(f.Context(), &JWTConfig{Algorithm: "HS256", Secrets: []string{strings.Repeat("s", 32)}}, nil, defaultRealm)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := ks.sign(&Claims{SessionID: "s"})
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", strings.Repeat(".", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := ks.verify(tok)
		if err == nil && (c.Subject == "" || c.SessionID == "") {
			t.Fatalf("accepted a token without sub/sid: %q", tok)
		}
	})
}

func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"passwordless",
		"passwordless {\n code_length 6\n email {\n smtp h:25 {\n tls none\n }\n }\n}",
		"passwordless {\n rate_limit {\n per_ip 5 1h\n }\n jwt {\n secret a b\n }\n}",
		"passwordless {\n email {\n",
		"passwordless {\n demo_user\n}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte(input), "Caddyfile")
		if err != nil {
			return
		}
		var p Passwordless
		_ = p.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)) // must not panic
	})
}
