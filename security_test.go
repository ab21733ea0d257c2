package passwordless

// Regressions for the findings of the outside security review: each test
// failed before its fix.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The database and its -wal and -shm companions hold the signing key and
// the code HMAC key: none may be readable by other local users, whatever
// the umask, and companions left world-readable are repaired.
func TestDatabaseFilesAreOwnerOnly(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)

	check := func(path string) {
		t.Helper()
		s, err := openSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		// A write that lands in the WAL, as the generated keys do.
		if _, err := s.Secret(context.Background(), "probe", func() ([]byte, error) { return randomBytes(32) }); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(name)
			if err != nil {
				t.Fatalf("%s: %v", filepath.Base(name), err)
			}
			if mode := fi.Mode().Perm(); mode != 0o600 {
				t.Errorf("%s has mode %o, want 600", filepath.Base(name), mode)
			}
		}
		releaseSQLite(s)
	}
	check(filepath.Join(t.TempDir(), "new.db"))

	// A store, and companions, an earlier version left with the umask's
	// mode. (Only a SQLite file is a store: an empty one is refused.)
	dir := t.TempDir()
	path := filepath.Join(dir, "old.db")
	s, err := openSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	releaseSQLite(s)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path + "-wal", path + "-shm"} {
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check(path)
}

// Code redemption claims the attempt before comparing: a burst of
// concurrent guesses against one code compares at most max_attempts of
// them, on every store.
func testAttemptsClaimedBeforeCompare(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := now().Truncate(time.Millisecond)
	for round := range 3 {
		alias := fmt.Sprintf("email:burst%d@example.com", round)
		if err := storeSQL(s).SaveCode(ctx, Code{ID: fmt.Sprintf("burst%d", round), Alias: alias, Purpose: purposeLogin, Hash: []byte("right"), ExpiresAt: t0.Add(time.Minute), CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		var compared, won int
		results := concurrently(50, func(i int) int {
			_, res, err := s.RedeemCode(ctx, alias, purposeLogin, func([]byte) bool { return false }, 5, t0)
			if err != nil {
				t.Error(err)
			}
			return int(res)
		})
		for _, res := range results {
			switch CodeResult(res) {
			case CodeWrong:
				compared++
			case CodeOK:
				won++
			}
		}
		if compared > 5 || won != 0 {
			t.Fatalf("round %d: %d guesses compared (max_attempts 5), %d won", round, compared, won)
		}
		if compared != 5 {
			t.Fatalf("round %d: only %d of 5 attempts were used", round, compared)
		}
	}
}

func TestFailedExchangesAreLimitedPerIP(t *testing.T) {
	e := newEnv(t,
		withConfig("rate_limit {\n send_interval 0s\n}"),
		withGlobal("servers {\n trusted_proxies static 127.0.0.1/8 ::1\n}"))
	from := func(ip string, fields map[string]string) response {
		return e.postForm("/auth/token/", fields, "X-Forwarded-For", ip)
	}
	// An attacker who knows no code tries to lock four accounts from one
	// address, lockoutThreshold wrong guesses each.
	const budget = 20 // the default failed_per_ip
	failures := 0
	for v := range 4 {
		victim := fmt.Sprintf("victim%d@example.com", v)
		for i := range lockoutThreshold {
			r := from("203.0.113.7", map[string]string{"email": victim, "token": fmt.Sprintf("%06d", i)})
			failures++
			if failures > budget {
				expectStatus(t, r, http.StatusTooManyRequests)
				if r.header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
			} else if r.status != http.StatusBadRequest && r.status != http.StatusTooManyRequests {
				t.Fatalf("guess %d: status %d: %s", failures, r.status, r.body)
			}
		}
	}
	// The accounts past the budget are not locked: their owners, elsewhere,
	// sign in.
	for _, victim := range []string{"victim2@example.com", "victim3@example.com"} {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": victim}, "X-Forwarded-For", "198.51.100.2"), http.StatusOK)
		expectStatus(t, from("198.51.100.2", map[string]string{"email": victim, "token": e.smtp.code(t, victim)}), http.StatusOK)
	}
	// The sign-in form shares the budget: the attacker is refused there
	// too, before any guess is compared.
	r := e.postForm("/auth/login", map[string]string{"alias": "victim3@example.com", "code": "123456"}, "Origin", testBase, "X-Forwarded-For", "203.0.113.7")
	expectStatus(t, r, http.StatusTooManyRequests)
}

func TestOnlyRealPreflightsPassWithoutToken(t *testing.T) {
	e := newEnv(t)
	preflight := http.Header{"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"POST"}}
	expectStatus(t, e.do(http.MethodOptions, "/api/items", preflight, nil), http.StatusOK)
	if e.upstream.requests() != 1 {
		t.Fatal("the preflight did not reach the upstream")
	}
	// Not preflights: no CORS headers, or a body.
	expectStatus(t, e.do(http.MethodOptions, "/api/items", nil, nil), http.StatusUnauthorized)
	expectStatus(t, e.do(http.MethodOptions, "/api/items", preflight, strings.NewReader(`{"delete":"all"}`)), http.StatusUnauthorized)
	if e.upstream.requests() != 1 {
		t.Fatalf("%d unauthenticated OPTIONS requests reached the upstream", e.upstream.requests()-1)
	}
	tok := e.login("cors@example.com").str("token")
	expectStatus(t, e.do(http.MethodOptions, "/api/items", http.Header{"Authorization": {"Bearer " + tok}}, strings.NewReader("x")), http.StatusOK)
}

// rawGet sends a request line exactly as given, which an HTTP client
// would normalise, and returns the status.
func rawGet(t *testing.T, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("localhost:%d", testPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\nAccept: application/json\r\nConnection: close\r\n\r\n", target, testPort)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestPathReadingsCannotSlipPastProtect(t *testing.T) {
	e := newEnv(t, withConfig("public /static/* /health"))
	for _, target := range []string{"/static/..;/secret", "/static/..%3b/secret", "/static\\..\\secret", "/static/%2e%2e;/secret"} {
		if got := rawGet(t, target); got != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", target, got)
		}
	}
	// Public stays public under every reading.
	for _, target := range []string{"/static/app.css", "/static/a;v=2/app.css", "/health"} {
		if got := rawGet(t, target); got != http.StatusOK {
			t.Errorf("%s: status %d, want 200", target, got)
		}
	}
	if n := e.upstream.requests(); n != 3 {
		t.Fatalf("upstream got %d requests, want 3", n)
	}

	e = newEnv(t, withConfig("protect /api/*"))
	for _, target := range []string{"/api;/x", "/api\\x", "/API;jsessionid=1/x", "/api%5cx"} {
		if got := rawGet(t, target); got != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", target, got)
		}
	}
	if got := rawGet(t, "/app;v=1/x"); got != http.StatusOK {
		t.Errorf("/app;v=1/x: status %d, want 200", got)
	}
}

func TestNextCannotLeaveTheSiteAfterCleaning(t *testing.T) {
	for in, want := range map[string]string{
		"/./\\evil.example":   "/",
		"/.\\/evil.example":   "/",
		"/%5Cevil.example":    "/",
		"/a/../\\evil":        "/",
		"/./a/../b?x=1":       "/b?x=1",
		"/app/./page/":        "/app/page/",
		"/.//evil.example/x":  "/evil.example/x",
		"/%2F%2Fevil.example": "/evil.example",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
	e := newEnv(t, withConfig("demo_user demo@example.com 135790"))
	r := e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790", "next": "/./\\evil.example"})
	expectStatus(t, r, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/" {
		t.Fatalf("Location %q", loc)
	}
}

func TestHTTPSReadsOnlyTheHostPrefixedCookie(t *testing.T) {
	client, do, _ := httpsSite(t)
	// The attacker's own valid token, planted without the prefix.
	req, _ := http.NewRequest(http.MethodPost, "https://localhost:9443/auth/token", strings.NewReader("email=demo@example.com&token=135790"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	tok := jsonField(t, body, "token")

	get := func(cookie string) int {
		req, _ := http.NewRequest(http.MethodGet, "https://localhost:9443/app", nil)
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Accept", "application/json")
		return do(req).StatusCode
	}
	if got := get(cookieName + "=" + tok); got != http.StatusUnauthorized {
		t.Fatalf("planted %s over HTTPS: status %d, want 401", cookieName, got)
	}
	if got := get(secureCookieName + "=" + tok); got != http.StatusOK {
		t.Fatalf("%s over HTTPS: status %d, want 200", secureCookieName, got)
	}
}

// On HTTPS, an Origin of the same host over plain HTTP is another origin:
// a network attacker's page could otherwise sign a visitor in as the
// attacker (login CSRF) or act with their cookie.
func TestHTTPSSameOriginNeedsTheScheme(t *testing.T) {
	_, do, up := httpsSite(t)
	form := func(path, origin, cookie string, body url.Values) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "https://localhost:9443"+path, strings.NewReader(body.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		return do(req)
	}
	signIn := url.Values{"alias": {"demo@example.com"}, "code": {"135790"}}
	if res := form("/auth/login", "http://localhost:9443", "", signIn); res.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in form from http://: %d, want 403", res.StatusCode)
	}
	res := form("/auth/login", "https://localhost:9443", "", signIn)
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in form from https://: %d, want 303", res.StatusCode)
	}
	var cookie string
	for _, c := range res.Cookies() {
		if c.Name == secureCookieName {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	if res := form("/app", "http://localhost:9443", cookie, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("cookie POST from http://: %d, want 403", res.StatusCode)
	}
	if res := form("/auth/logout/all", "http://localhost:9443", cookie, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("logout/all from http://: %d, want 403", res.StatusCode)
	}
	seen := up.requests()
	if res := form("/app", "https://localhost:9443", cookie, nil); res.StatusCode != http.StatusOK || up.requests() != seen+1 {
		t.Fatalf("cookie POST from https://: %d", res.StatusCode)
	}
}

// httpsSite starts a site on https://localhost:9443 (tls internal) with a
// demo user, demo@example.com with code 135790, and returns a client that
// trusts it and does not follow redirects, a helper that sends a request
// and reads the answer, and the upstream.
func httpsSite(t *testing.T) (*http.Client, func(*http.Request) *http.Response, *upstream) {
	up := startUpstream(t)
	tester := newTester(t, fmt.Sprintf(`{
	admin localhost:2999
	http_port %d
	https_port 9443
	skip_install_trust
	grace_period 1ms
	local_certs
}
https://localhost:9443 {
	tls internal
	passwordless {
		storage sqlite %s
		email {
			log
		}
		demo_user demo@example.com 135790
	}
	reverse_proxy %s
}
`, testPort, filepath.Join(t.TempDir(), "pwl.db"), strings.TrimPrefix(up.URL, "http://")))
	_ = tester
	servedCertificates(t, "127.0.0.1:9443", "localhost")
	client := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(req *http.Request) *http.Response {
		t.Helper()
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	return client, do, up
}

func TestIdentityTrailersAreDropped(t *testing.T) {
	e := newEnv(t, withConfig("public /open/*"))
	tok := e.login("trail@example.com").str("token")
	for _, path := range []string{"/private", "/open/x"} {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("some body"))
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, testBase+path, pr)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Trailer = http.Header{"X-Auth-User-Id": {"admin"}, "X-Auth-User-Email": {"admin@example.com"}, "X-Checksum": {"abc"}}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, res.StatusCode)
		}
		tr := e.upstream.lastTrailer()
		if tr.Get("X-Checksum") != "abc" {
			t.Fatalf("%s: the upstream got no trailers at all (%v): the test proves nothing", path, tr)
		}
		if tr.Get("X-Auth-User-Id") != "" || tr.Get("X-Auth-User-Email") != "" {
			t.Fatalf("%s: identity trailers reached the upstream: %v", path, tr)
		}
	}
}

func TestUpstreamDoesNotGetTheSessionCookie(t *testing.T) {
	e := newEnv(t, withConfig("demo_user demo@example.com 135790\npublic /open/*"))
	c := sessionCookieOf(t, e.postLogin(map[string]string{"alias": "demo@example.com", "code": "135790"}))
	for _, path := range []string{"/app", "/open/x"} {
		expectStatus(t, e.get(path, "Cookie", "theme=dark; "+c.Name+"="+c.Value+"; lang=en"), http.StatusOK)
		if got := e.upstream.lastHeader().Get("Cookie"); got != "theme=dark; lang=en" {
			t.Fatalf("%s: upstream got Cookie %q", path, got)
		}
	}
	expectStatus(t, e.get("/app", "Cookie", c.Name+"="+c.Value), http.StatusOK)
	if got := e.upstream.lastHeader().Values("Cookie"); len(got) != 0 {
		t.Fatalf("upstream got Cookie %q", got)
	}
}

// A relay on localhost with AUTH and no TLS (Mailpit, a local submission
// port) works: the config allows it, so sending must too.
func TestSMTPAuthWithoutTLSOnLoopback(t *testing.T) {
	srv := startSMTP(t)
	srv.user, srv.pass = "relay", "relay-pass"
	e := newEnv(t, withEmail(`email {
		from login@example.com
		smtp `+srv.addr+` {
			tls none
			username relay
			password relay-pass
		}
	}`))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "local@example.com"}), http.StatusOK)
	srv.code(t, "local@example.com")
}

func TestTokenWithCritHeaderIsRefused(t *testing.T) {
	secret := strings.Repeat("c", 32)
	e := newEnv(t, withConfig("jwt {\n algorithm HS256\n secret "+secret+"\n}"))
	tok := e.login("crit@example.com").str("token")
	var c Claims
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &c)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(crit bool) string {
		j := jwt.NewWithClaims(jwt.SigningMethodHS256, &c)
		j.Header["kid"] = parsed.Header["kid"]
		if crit {
			j.Header["crit"] = []string{"exp-extension"}
			j.Header["exp-extension"] = true
		}
		s, err := j.SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expectStatus(t, e.get("/x", bearer(signed(false))...), http.StatusOK)
	expectStatus(t, e.get("/x", bearer(signed(true))...), http.StatusUnauthorized)
}
