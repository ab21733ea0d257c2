package passwordless

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// deliveryWait bounds how long a test waits for the outbox workers.
const deliveryWait = 15 * time.Second

// eventually polls cond until it holds, failing the test after deliveryWait.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(deliveryWait); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// outboxLen is how many messages wait in e's store.
func (e *env) outboxLen() int {
	e.t.Helper()
	s, err := openSQLite(e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	defer releaseSQLite(s)
	var n int
	if err := s.rdb.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// drain waits until everything queued was sent or dropped.
func (e *env) drain() {
	e.t.Helper()
	eventually(e.t, "the outbox to empty", func() bool { return e.outboxLen() == 0 })
}

// untilFailing sends code requests to path until the channel answers 503,
// as it does once a delivery has failed, and returns that answer.
func (e *env) untilFailing(path string, fields map[string]string) response {
	e.t.Helper()
	for deadline := time.Now().Add(deliveryWait); ; time.Sleep(100 * time.Millisecond) {
		r := e.postForm(path, fields)
		switch {
		case r.status == http.StatusServiceUnavailable:
			return r
		case r.status != http.StatusOK:
			e.t.Fatalf("waiting for 503: %d %s", r.status, r.body)
		case time.Now().After(deadline):
			e.t.Fatal("timed out waiting for the channel to be failing")
		}
	}
}

// A 421 is transient: the code request was answered at once, and the
// worker retries until the server takes the message.
func TestTransientSMTPFailureIsRetried(t *testing.T) {
	e := newEnv(t)
	e.smtp.setReject(&smtp.SMTPError{Code: 421, Message: "try again later"})
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "retry@example.com"}), http.StatusOK)
	eventually(t, "a first delivery attempt", func() bool { return e.smtp.rcptCount() >= 1 })
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d mails taken while refusing", n)
	}
	e.smtp.setReject(nil)
	code := e.smtp.code(t, "retry@example.com")
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "retry@example.com", "token": code}), http.StatusOK)
	e.drain()
}

// While deliveries fail, code requests answer 503 naming no server; once
// a retry gets through, they are answered again.
func TestSMTPOutageIs503(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_alias 1000 1h\n per_ip 1000 1h\n}"))
	e.smtp.setReject(&smtp.SMTPError{Code: 451, Message: "try later"})
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "down@example.com"}), http.StatusOK)
	r := e.untilFailing("/auth/email/", map[string]string{"email": "other@example.com"})
	if r.str("detail") == "" || strings.Contains(string(r.body), e.smtp.addr) || r.header.Get("Retry-After") == "" {
		t.Fatalf("503 %v: %s", r.header, r.body)
	}
	e.smtp.setReject(nil)
	// The queued message's retry succeeds, and the channel with it.
	e.smtp.code(t, "down@example.com")
	eventually(t, "code requests to be answered again", func() bool {
		return e.postForm("/auth/email/", map[string]string{"email": "back@example.com"}).status == http.StatusOK
	})
	e.login("back2@example.com")
}

// A server that takes the message and then refuses it for good: the code
// may have leaked somewhere and was never delivered, so it must not work.
func TestUndeliveredCodeIsVoid(t *testing.T) {
	e := newEnv(t)
	e.smtp.mu.Lock()
	e.smtp.failData = &smtp.SMTPError{Code: 554, Message: "rejected after data"}
	e.smtp.mu.Unlock()
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "void@example.com"}), http.StatusOK)
	code := e.smtp.code(t, "void@example.com")
	// The code is voided before the channel is marked failing.
	e.untilFailing("/auth/email/", map[string]string{"email": "probe@example.com"})
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "void@example.com", "token": code}), http.StatusBadRequest)
	if n := e.smtp.rcptCount(); n != 1 {
		t.Fatalf("a permanent refusal was retried: %d attempts", n)
	}
}

func TestSMTPDownIs503(t *testing.T) {
	e := newEnv(t)
	e.smtp.srv.Close()
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "gone@example.com"}), http.StatusOK)
	e.untilFailing("/auth/email/", map[string]string{"email": "gone2@example.com"})
}

// A burst of messages goes over one SMTP connection where the server
// allows it.
func TestSMTPBurstSharesAConnection(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n}"))
	e.smtp.mu.Lock()
	e.smtp.delay = func() time.Duration { return 200 * time.Millisecond }
	e.smtp.mu.Unlock()
	const n = 12
	for i := range n {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": fmt.Sprintf("b%d@example.com", i)}), http.StatusOK)
	}
	e.drain()
	if got := len(e.smtp.all()); got != n {
		t.Fatalf("%d mails, want %d", got, n)
	}
	e.smtp.mu.Lock()
	sessions := e.smtp.sessions
	e.smtp.mu.Unlock()
	// Two workers each take the first message alone; the rest queue up
	// behind them and leave in bursts.
	if sessions > n/2 {
		t.Fatalf("%d SMTP connections for %d messages", sessions, n)
	}
	t.Logf("%d messages over %d connections", n, sessions)
}
