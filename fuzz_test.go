package passwordless

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The seed corpora below run as ordinary tests with `go test`; run a
// target for longer with e.g. `go test -fuzz FuzzReadFields` (with
// -fuzzminimizetime 3s for the targets that write to the store).

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

// FuzzSafeNext: whatever `next` a client sends, the sign-in leads to a path
// of this site or to a host of return_hosts, as a browser reads the URL,
// and the answer is stable (a second check keeps it).
func FuzzSafeNext(f *testing.F) {
	p := &Passwordless{CookieDomain: "example.com", JWT: &JWTConfig{}}
	if err := p.provisionSSO(func(*string) {}); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/a?b=1", "https://app1.example.com/x/../y", "//evil.example/", "/\\evil.example",
		"https://example.com.evil.example/", "https://user@app1.example.com/", "https://evil.example\uff0f.example.com/",
		"https://app1.example.com./x", "/%2F%2Fevil.example", "javascript://app1.example.com/%0aalert(1)", "http://app1.example.com/"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, next string, overTLS bool) {
		r := httptest.NewRequest(http.MethodGet, "http://auth.example.com/auth/login", nil)
		if overTLS {
			r = httptest.NewRequest(http.MethodGet, "https://auth.example.com/auth/login", nil)
		}
		out := p.safeNext(r, next)
		if again := p.safeNext(r, out); again != out {
			t.Fatalf("not stable: %q -> %q -> %q", next, out, again)
		}
		for _, c := range out {
			if c <= ' ' || c == 0x7f || c == '\\' || c >= utf8.RuneSelf {
				t.Fatalf("next %q gives %q, with %q in it", next, out, c)
			}
		}
		if strings.HasPrefix(out, "/") {
			if strings.HasPrefix(out, "//") {
				t.Fatalf("next %q gives %q, another host to a browser", next, out)
			}
			return
		}
		u, err := url.Parse(out)
		if err != nil || u.User != nil || u.Opaque != "" || !p.returnHosts.allows(u.Host) ||
			!(u.Scheme == "https" || u.Scheme == "http" && !overTLS) {
			t.Fatalf("next %q gives %q, not a path nor an allowed host", next, out)
		}
		for _, c := range u.Hostname() {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("next %q gives host %q, which a browser reads otherwise", next, u.Hostname())
			}
		}
	})
}

// FuzzCheckJudgesLikeProtection: for any request target a proxy describes
// to {prefix}/check, the check and in-Caddy protection of the same request
// (as Caddy's server parses it) decide alike, signed out and signed in.
// The check may refuse what it cannot read with 400; it never lets in
// what protection keeps out, nor keeps out what protection lets in.
func FuzzCheckJudgesLikeProtection(f *testing.F) {
	p := benchHandler(f, `demo_user bench@example.com 246810
		public /public/* /health
		protect /admin/* {
			role admin
		}
		protect /*`)
	tok := benchToken(f, p)
	for _, s := range []string{"/public/x", "/public/../admin", "/PUBLIC/x", "/public/%2e%2e/admin", "/public%2F..%2Fadmin", "/health",
		"/health/", "/health;x", "/admin", "/ADMIN/.", "/admin/x/..", "/app?x=/public/", "/%70ublic/x", "//public/x", "/public\\..\\admin", "*"} {
		f.Add("GET", s, false, false)
		f.Add("POST", s, true, true)
	}
	passed := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	f.Fuzz(func(t *testing.T, method, target string, signedIn, nginx bool) {
		creds := ""
		if signedIn {
			creds = "Authorization: Bearer " + tok + "\r\n"
		}
		// The request protection sees, as Caddy's server reads it off the wire.
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: app.example.com\r\n" + creds + "\r\n")))
		if err != nil {
			return
		}
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		if err := p.ServeHTTP(w, r, passed); err != nil {
			t.Fatal(err)
		}
		inCaddy := w.Code

		// The same request described to the check by a proxy: as Caddy's
		// forward_auth and Traefik do, or as nginx's auth_request does.
		c := httptest.NewRequest(http.MethodGet, "http://app.example.com/auth/check", nil)
		if nginx {
			c.Header.Set("X-Original-Method", method)
			c.Header.Set("X-Original-Uri", target)
		} else {
			c.Header.Set("X-Forwarded-Method", method)
			c.Header.Set("X-Forwarded-Uri", target)
			c.Header.Set("X-Forwarded-Host", "app.example.com")
			c.Header.Set("X-Forwarded-Proto", "http")
		}
		if signedIn {
			c.Header.Set("Authorization", "Bearer "+tok)
		}
		ctx := context.WithValue(c.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: true})
		cw := httptest.NewRecorder()
		if err := p.ServeHTTP(cw, c.WithContext(ctx), nil); err != nil {
			t.Fatal(err)
		}
		check := cw.Code

		switch {
		case check == http.StatusBadRequest:
			// Refused as unreadable: fails closed.
		case check == http.StatusOK && inCaddy != http.StatusTeapot:
			t.Fatalf("%s %q (signed in: %v, nginx: %v): the check lets in what protection answers %d", method, target, signedIn, nginx, inCaddy)
		case check != http.StatusOK && inCaddy == http.StatusTeapot:
			t.Fatalf("%s %q (signed in: %v, nginx: %v): protection lets in what the check answers %d", method, target, signedIn, nginx, check)
		case check == http.StatusForbidden && inCaddy != http.StatusForbidden:
			t.Fatalf("%s %q (signed in: %v, nginx: %v): the check forbids, protection answers %d", method, target, signedIn, nginx, inCaddy)
		}
	})
}

// FuzzPasskeyLoginFinish: whatever a client posts to login/finish, the
// answer is the one failure (400) or a sign-in (200), never an error of
// the server; and no challenge signs in twice, however the rest of the
// assertion is changed around it. The seeds are genuine assertions, so
// the fuzzer starts from bodies that get past parsing.
func FuzzPasskeyLoginFinish(f *testing.F) {
	p := benchHandler(f, "passkeys {\n rp_id localhost\n origins http://localhost:9080\n}")
	// Every failure counts against the client: with the default budget the
	// fuzzer would soon meet only 429.
	p.RateLimit.FailedPerIP = &Limit{Count: 1 << 30, Window: caddy.Duration(time.Hour)}
	a, k := passkeyHolder(f, p)
	for range 3 {
		w := benchJSON(f, p, "/auth/passkeys/login/begin", []byte("{}"))
		var opts map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &opts); err != nil {
			f.Fatal(err)
		}
		body, err := json.Marshal(a.get(opts, k))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte(`{"id":"","rawId":"","type":"public-key","response":{}}`))
	f.Add([]byte(`{}`))
	signedIn := map[string]bool{} // a worker calls the target one input at a time
	f.Fuzz(func(t *testing.T, body []byte) {
		w := benchJSON(t, p, "/auth/passkeys/login/finish", body)
		switch w.Code {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		var sent struct {
			Response struct {
				ClientDataJSON string `json:"clientDataJSON"`
			} `json:"response"`
		}
		var cd struct {
			Challenge string `json:"challenge"`
		}
		err := json.Unmarshal(body, &sent)
		var raw []byte
		if err == nil {
			raw, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(sent.Response.ClientDataJSON, "="))
		}
		if err != nil || json.Unmarshal(raw, &cd) != nil || cd.Challenge == "" {
			t.Fatalf("signed in with an assertion whose challenge cannot be read: %q", body)
		}
		if signedIn[cd.Challenge] {
			t.Fatalf("challenge %q signed in twice", cd.Challenge)
		}
		signedIn[cd.Challenge] = true
	})
}

// FuzzAllowList: the allow list's index (maps, so that a check costs the
// same for every alias) admits exactly the aliases, with exactly the roles,
// that reading the lines one by one would; and parsing any file either
// fails naming a line or gives lines whose patterns fit what they name.
func FuzzAllowList(f *testing.F) {
	for _, s := range []struct{ file, alias string }{
		{"*@example.com staff\n+44* uk\nada@partner.org admin staff # lead\n", "Ada@Partner.org"},
		{"*@*.example.com\n*@example.com a\n", "x@deep.sub.example.com"},
		{"\uFEFF+15551234567 ops\n#comment\n  \n", "+15551234567"},
		{"a#b@example.com\n+1*\n+12*\n", "+1 555 123 4567"},
		{"*@xn--bcher-kva.example\n", "x@bücher.example"},
		{"*@example.com staff\n*@*.example.com sub\n", "bob@EXAMPLE.com"},
		{"+44* uk\n+4420* london\n", "+44 20 7946 0000"},
		{"bob@example.com a\n", "bob@example.com"},
	} {
		f.Add(s.file, s.alias)
	}
	f.Fuzz(func(t *testing.T, file, alias string) {
		lines, err := parseAllowFile("allow.txt", []byte(file))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "allow.txt:") {
				t.Fatalf("error without its line: %v", err)
			}
			return
		}
		ix := newAllowIndex(lines)
		for _, a := range []Alias{{Kind: KindEmail}, {Kind: KindMobile}} {
			var err error
			if a.Kind == KindEmail {
				a.Value, err = normalizeEmail(alias)
			} else {
				a.Value, err = normalizeMobile(alias)
			}
			if err != nil {
				continue
			}
			want, wantRoles := linesAdmit(lines, a)
			got, gotRoles := ix.lookup(a)
			slices.Sort(wantRoles)
			gotRoles = slices.Clone(gotRoles)
			slices.Sort(gotRoles)
			if got != want || !slices.Equal(slices.Compact(gotRoles), slices.Compact(wantRoles)) {
				t.Fatalf("%s: index says %v %v, the lines say %v %v", a.Key(), got, gotRoles, want, wantRoles)
			}
		}
	})
}
