package passwordless

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestInstancesShareState runs two handlers with their own connection pools
// and caches, as two Caddy instances would be, on one PostgreSQL: a code
// sent by one is redeemed at the other, limits count across both, and a
// logout at one ends the session at the other.
func TestInstancesShareState(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	c := twoInstances(t, dsn, mail, "", "reverse_proxy "+strings.TrimPrefix(startUpstream(t).URL, "http://"))
	post, get := c.post, c.get
	a, b := "http://localhost:9080", "http://localhost:9081"

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

// TestInstancesSendEachMessageOnce runs two instances on one PostgreSQL,
// with the same email settings, so their workers compete for one queue:
// every message queued at either is sent, and sent once.
func TestInstancesSendEachMessageOnce(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	mail.mu.Lock()
	mail.delay = func() time.Duration { return 20 * time.Millisecond } // so that workers overlap
	mail.mu.Unlock()
	twoInstances(t, dsn, mail, "rate_limit {\n\t\t\tper_ip 1000 1h\n\t\t}", `respond "ok"`)
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

// twoInstances starts two sites on dsn, on ports 9080 and 9081, each with
// a connection pool and caches of its own as two instances would have.
// They send codes to mail and have extra passwordless options, in front
// of handler.
func twoInstances(t *testing.T, dsn string, mail *smtpServer, extra, handler string) *cluster {
	return newCluster(t, postgresSite(9080, dsn+"&application_name=a", mail, extra, handler),
		postgresSite(9081, dsn+"&application_name=b", mail, extra, handler))
}

func postgresSite(port int, dsn string, mail *smtpServer, extra, handler string) string {
	return fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage postgres "%s"
		%s
		%s
	}
	%s
}
`, port, dsn, mail.emailBlock(), extra, handler)
}

// TestRoleRemovalAcrossInstances takes a stored role away with the command
// line while two instances serve: each refuses the role's routes within
// 5 seconds of real time, without a restart.
func TestRoleRemovalAcrossInstances(t *testing.T) {
	dsn := postgresDSN(t)
	mail := startSMTP(t)
	c := twoInstances(t, dsn, mail, "protect /admin/* {\n\t\t\trole admin\n\t\t}\n\t\tprotect /*",
		"reverse_proxy "+strings.TrimPrefix(startUpstream(t).URL, "http://"))
	a, b := "http://localhost:9080", "http://localhost:9081"
	op := &cli{t: t, config: cliSite(t, fmt.Sprintf("storage postgres %q", dsn), "")}
	op.ok("users", "add", "chief@example.com", "--role", "admin")
	expectStatus(t, c.post(a, "/auth/email", url.Values{"email": {"chief@example.com"}}, ""), http.StatusOK)
	r := c.post(b, "/auth/token", url.Values{"email": {"chief@example.com"}, "token": {mail.code(t, "chief@example.com")}}, "")
	expectStatus(t, r, http.StatusOK)
	tok := r.str("token")
	for _, base := range []string{a, b} {
		expectStatus(t, c.get(base, "/admin/panel", tok), http.StatusOK)
	}
	op.ok("users", "roles", "chief@example.com")
	within5s(t, "the admin role taken away on both", func() bool {
		return c.get(a, "/admin/panel", tok).status == http.StatusForbidden && c.get(b, "/admin/panel", tok).status == http.StatusForbidden
	})
	for _, base := range []string{a, b} {
		expectStatus(t, c.get(base, "/app", tok), http.StatusOK)
	}
}
