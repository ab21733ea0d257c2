package passwordless

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestInstancesShareState runs two handlers with their own connection pools
// and caches, as two Caddy instances would be, on one PostgreSQL: a code
// sent by one is redeemed at the other, limits count across both, and a
// logout at one ends the session at the other.
func TestInstancesShareState(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	up := startUpstream(t)
	site := func(port int, app string) string {
		return fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage postgres "%s&application_name=%s"
		email {
			from login@example.com
			smtp %s {
				tls none
			}
		}
	}
	reverse_proxy %s
}
`, port, dsn, app, mail.addr, strings.TrimPrefix(up.URL, "http://"))
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
	skip_install_trust
	grace_period 1ms
}
`+site(9080, "a")+site(9081, "b"), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	a, b := "http://localhost:9080", "http://localhost:9081"
	post := func(base, path string, form url.Values, tok string) response {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return doRequest(t, req)
	}
	get := func(base, path, tok string) response {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		return doRequest(t, req)
	}

	expectStatus(t, post(a, "/auth/email/", url.Values{"email": {"multi@example.com"}}, ""), http.StatusOK)
	// The send interval holds across instances.
	expectStatus(t, post(b, "/auth/email/", url.Values{"email": {"multi@example.com"}}, ""), http.StatusTooManyRequests)
	code := mail.code(t, "multi@example.com")
	r := post(b, "/auth/token/", url.Values{"email": {"multi@example.com"}, "token": {code}}, "")
	expectStatus(t, r, http.StatusOK)
	tok := r.str("token")
	expectStatus(t, get(a, "/app", tok), http.StatusOK) // A verifies B's token: one key
	expectStatus(t, get(b, "/app", tok), http.StatusOK)

	expectStatus(t, post(b, "/auth/logout", nil, tok), http.StatusNoContent)
	expectStatus(t, get(b, "/app", tok), http.StatusUnauthorized) // at once where it happened
	clock.Advance(sessionRecheck)
	expectStatus(t, get(a, "/app", tok), http.StatusUnauthorized) // within sessionRecheck elsewhere
	expectStatus(t, post(a, "/auth/refresh", url.Values{"refresh_token": {r.str("refresh_token")}}, ""), http.StatusUnauthorized)
}

func doRequest(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, body: body}
	_ = json.Unmarshal(body, &r.json)
	return r
}

// TestInstancesSendEachMessageOnce runs two instances on one PostgreSQL,
// with the same email settings, so their workers compete for one queue:
// every message queued at either is sent, and sent once.
func TestInstancesSendEachMessageOnce(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	mail.mu.Lock()
	mail.delay = func() time.Duration { return 20 * time.Millisecond } // so that workers overlap
	mail.mu.Unlock()
	site := func(port int, app string) string {
		return fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage postgres "%s&application_name=%s"
		email {
			from login@example.com
			smtp %s {
				tls none
			}
		}
		rate_limit {
			per_ip 1000 1h
		}
	}
	respond "ok"
}
`, port, dsn, app, mail.addr)
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(`{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
	skip_install_trust
	grace_period 1ms
}
`+site(9080, "a")+site(9081, "b"), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	const n = 40
	for i := range n {
		base := "http://localhost:9080"
		if i%2 == 1 {
			base = "http://localhost:9081"
		}
		req, _ := http.NewRequest(http.MethodPost, base+"/auth/email/", strings.NewReader(url.Values{"email": {fmt.Sprintf("once%d@example.com", i)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		expectStatus(t, doRequest(t, req), http.StatusOK)
	}
	s, err := openPostgres(dsn + "&application_name=a")
	if err != nil {
		t.Fatal(err)
	}
	defer releasePostgres(s)
	eventually(t, "the outbox to empty", func() bool {
		var left int
		if err := s.rdb.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM outbox`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
	got := map[string]int{}
	for _, m := range mail.all() {
		got[m.To]++
	}
	for i := range n {
		if to := fmt.Sprintf("once%d@example.com", i); got[to] != 1 {
			t.Errorf("%s got %d mails", to, got[to])
		}
	}
	if len(got) != n {
		t.Errorf("mails went to %d addresses, want %d", len(got), n)
	}
}
