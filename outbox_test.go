package passwordless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
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
	return outboxLen(e.t, e.db)
}

// outboxLen is how many messages wait in the SQLite store at db.
func outboxLen(t testing.TB, db string) int {
	t.Helper()
	s, err := openSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseSQLite(s)
	var n int
	if err := s.rdb.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// drain waits until everything queued was sent or dropped.
func (e *env) drain() {
	e.t.Helper()
	drain(e.t, e.db)
}

// drain waits until everything queued in the SQLite store at db was sent
// or dropped: only then does a count of what was sent mean anything.
func drain(t testing.TB, db string) {
	t.Helper()
	eventually(t, "the outbox to empty", func() bool { return outboxLen(t, db) == 0 })
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

// While the mail server itself refuses (here MAIL FROM, as a suspended
// sending account is), code requests answer 503 naming no server; once a
// probe finds it answering again, they are answered again.
func TestSMTPOutageIs503(t *testing.T) {
	e := newEnv(t, withConfig("rate_limit {\n send_interval 0s\n per_alias 1000 1h\n per_ip 1000 1h\n}"))
	e.smtp.setRejectMail(&smtp.SMTPError{Code: 451, Message: "try later"})
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "down@example.com"}), http.StatusOK)
	r := e.untilFailing("/auth/email/", map[string]string{"email": "other@example.com"})
	if r.str("detail") == "" || strings.Contains(string(r.body), e.smtp.addr) || r.header.Get("Retry-After") != "10" {
		t.Fatalf("503 %v: %s", r.header, r.body)
	}
	e.smtp.setRejectMail(nil)
	clock.Advance(probeEvery)
	// The queued message's retry gets through too.
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
	// The code is voided before the message leaves the queue.
	e.drain()
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

// caddyProcess is this test binary running as caddy, in a process of its
// own, from a Caddyfile.
type caddyProcess struct {
	cmd *exec.Cmd
	out *lockedBuffer
}

// lockedBuffer is a bytes.Buffer that the process writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startCaddyProcess(t *testing.T, caddyfile, base string) *caddyProcess {
	t.Helper()
	p := runCaddyProcess(t, caddyfile)
	eventually(t, "caddy to answer", func() bool {
		res, err := http.Get(base + "/auth/jwks.json")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return p
}

// runCaddyProcess starts the process and returns at once.
func runCaddyProcess(t *testing.T, caddyfile string) *caddyProcess {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &caddyProcess{out: new(lockedBuffer)}
	p.cmd = exec.Command(self, "run", "--config", cfg, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), caddyMainEnv+"=1", "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("caddy's output:\n%s", p.out)
		}
	})
	return p
}

// kill ends the process at once, as kill -9 does: no cleanup runs.
func (p *caddyProcess) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A message queued before Caddy is killed with SIGKILL is delivered by
// the next Caddy on the same store.
func TestQueuedMessageSurvivesKill9(t *testing.T) {
	mail := startSMTP(t)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	skip_install_trust
}
%s {
	passwordless {
		storage sqlite %s
		email {
			from login@example.com
			smtp %s {
				tls none
				timeout 2s
			}
		}
		rate_limit {
			send_interval 0s
		}
	}
	respond "ok"
}
`, base, filepath.Join(t.TempDir(), "pwl.db"), mail.addr)
	post := func(path string, form url.Values) int {
		res, err := http.PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	first := startCaddyProcess(t, caddyfile, base)
	mail.setReject(&smtp.SMTPError{Code: 421, Message: "try again later"})
	if s := post("/auth/email/", url.Values{"email": {"survivor@example.com"}}); s != http.StatusOK {
		t.Fatalf("code request: %d", s)
	}
	// The failure is logged once the worker has put the message back
	// in the queue for a retry.
	eventually(t, "a failed delivery", func() bool { return strings.Contains(first.out.String(), `"delivery failed"`) })
	first.kill()
	if n := len(mail.all()); n != 0 {
		t.Fatalf("%d mails before the restart", n)
	}

	mail.setReject(nil)
	startCaddyProcess(t, caddyfile, base)
	code := mail.code(t, "survivor@example.com")
	if s := post("/auth/token/", url.Values{"email": {"survivor@example.com"}, "token": {code}}); s != http.StatusOK {
		t.Fatalf("exchange after the restart: %d", s)
	}
}

// Known, unknown and demo aliases get their code request answered in the
// same time, however slow the mail server: the request only stores, the
// workers send. Medians of 30 requests each, interleaved, differ by less
// than 2 ms. The requests run on a shared machine, so a noisy round is
// measured again, up to 3 times; a real difference (a send in the request
// takes 150 ms or more here) fails every round.
func TestCodeRequestTimingSameForEveryAlias(t *testing.T) {
	e := newEnv(t, withConfig(`register_new_users false
		allow *@example.com
		demo_user demo@example.com 135790
		rate_limit {
			send_interval 0s
			per_alias 100000 1h
			per_ip 100000 1h
		}`))
	e.smtp.mu.Lock()
	e.smtp.delay = func() time.Duration { return time.Duration(150+mathrand.IntN(300)) * time.Millisecond }
	e.smtp.mu.Unlock()
	s, err := openSQLite(e.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Login(context.Background(), defaultRealm, Alias{Kind: KindEmail, Value: "known@example.com"}, true, now()); err != nil {
		t.Fatal(err)
	}
	releaseSQLite(s)

	aliases := map[string]string{"known": "known@example.com", "unknown": "unknown@example.com", "demo": "demo@example.com",
		"not allowed": "someone@elsewhere.example.org"}
	kinds := []string{"known", "unknown", "demo", "not allowed"}
	request := func(kind string) time.Duration {
		start := time.Now()
		r := e.postForm("/auth/email/", map[string]string{"email": aliases[kind]})
		took := time.Since(start)
		expectStatus(t, r, http.StatusOK)
		return took
	}
	for range 5 { // warm-up
		for _, k := range kinds {
			request(k)
		}
	}
	const n = 30
	var medians map[string]time.Duration
	for round := 1; round <= 3; round++ {
		took := map[string][]time.Duration{}
		for i := range n {
			for j := range kinds {
				k := kinds[(i+j)%len(kinds)] // rotate who goes first
				took[k] = append(took[k], request(k))
			}
		}
		medians = map[string]time.Duration{}
		lo, hi := time.Hour, time.Duration(0)
		for _, k := range kinds {
			slices.Sort(took[k])
			m := (took[k][n/2-1] + took[k][n/2]) / 2
			medians[k] = m
			lo, hi = min(lo, m), max(hi, m)
		}
		t.Logf("round %d: medians %v", round, medians)
		if hi-lo < 2*time.Millisecond {
			break
		}
		if round == 3 {
			t.Fatalf("code request medians differ by %v (%v)", hi-lo, medians)
		}
	}
	// The known alias's codes were sent, the others' never.
	e.smtp.last(t, "known@example.com")
	for _, m := range e.smtp.all() {
		if m.To != "known@example.com" {
			t.Fatalf("a mail went to %s", m.To)
		}
	}
}

// A delivered code leaves no trace in the store's files: within a second
// of delivery, someone who copies pwl.db, its -wal and its -shm (a backup,
// a stolen disk image) finds none of the codes that were sent, in the
// database pages, their free space or the log.
func TestDeliveredCodesLeaveNoTrace(t *testing.T) {
	e := newEnv(t, withConfig("code_length 10\nrate_limit {\n send_interval 0s\n}"))
	var codes []string
	for i := range 5 {
		addr := fmt.Sprintf("trace%d@example.com", i)
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": addr}), http.StatusOK)
		codes = append(codes, e.smtp.code(t, addr)) // waits until the outbox is empty
	}
	// One is used, one superseded: neither may linger either.
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "trace0@example.com", "token": codes[0]}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "trace1@example.com"}), http.StatusOK)
	codes = append(codes, e.smtp.code(t, "trace1@example.com"))
	time.Sleep(time.Second)
	for _, name := range []string{e.db, e.db + "-wal", e.db + "-shm"} {
		b, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range codes {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("code %d of %d is still in %s (%d bytes), a second after delivery", i+1, len(codes), filepath.Base(name), len(b))
			}
		}
	}
}

// openLimits lets a test ask for many codes without meeting a rate limit.
const openLimits = "rate_limit {\n send_interval 0s\n per_alias 1000 1h\n per_ip 1000 1h\n}"

// One recipient's trouble is that message's alone. A server that
// greylists one address (451 to RCPT TO) or refuses another for good (550)
// leaves the channel open for everyone else, however often the greylisted
// message is retried; the greylisted one arrives once the server takes it,
// and no log line names either address.
func TestRefusedRecipientKeepsChannelOpen(t *testing.T) {
	logOpt, logPath := captureLog(t)
	e := newEnv(t, withConfig(openLimits), logOpt)
	e.smtp.settle = nil // the greylisted message stays queued meanwhile
	e.smtp.setRejectTo("grey@example.com", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "<grey@example.com>: greylisted"})
	e.smtp.setRejectTo("gone@example.com", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<gone@example.com>: no such user"})
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "gone@example.com"}), http.StatusOK)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "grey@example.com"}), http.StatusOK)
	for i := range 4 {
		n := e.smtp.rcptCount()
		clock.Advance(retryMax) // the greylisted message is due again
		eventually(t, "another attempt", func() bool { return e.smtp.rcptCount() > n })
		time.Sleep(50 * time.Millisecond) // for the attempt's bookkeeping
		other := fmt.Sprintf("other%d@example.com", i)
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": other}), http.StatusOK)
		e.smtp.code(t, other)
		expectStatus(t, e.get("/auth/health"), http.StatusOK)
	}
	e.smtp.setRejectTo("grey@example.com", nil)
	clock.Advance(retryMax)
	code := e.smtp.code(t, "grey@example.com")
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "grey@example.com", "token": code}), http.StatusOK)
	e.drain()
	for _, m := range e.smtp.all() {
		if m.To == "gone@example.com" {
			t.Fatal("the refused address got mail")
		}
	}
	whole, entries := readLog(t, logPath)
	refusals := 0
	for _, l := range entries {
		if l.str("msg") == "delivery failed" {
			refusals++
			if !strings.Contains(l.str("error"), "smtp 451") && !strings.Contains(l.str("error"), "smtp 550") {
				t.Errorf("the log does not name the reply code: %v", l)
			}
		}
	}
	if refusals < 5 {
		t.Errorf("%d refusals logged, want 5 or more:\n%s", refusals, whole)
	}
	for _, l := range strings.Split(whole, "\n") {
		if (strings.Contains(l, "grey@") || strings.Contains(l, "gone@")) && !strings.Contains(l, auditLoggerFullName) {
			t.Errorf("a log line names the recipient: %s", l)
		}
	}
}

// A greylisted message does not hold up the rest of its burst: they go
// out over the same connection, not after a retry.
func TestRefusedRecipientDoesNotStopTheBurst(t *testing.T) {
	e := newEnv(t, withConfig(openLimits))
	// The first two messages take a while: each keeps a worker busy
	// while the next ones queue up, to be claimed in one burst.
	e.holdWorkers(700 * time.Millisecond)
	e.smtp.setRejectTo("grey@example.com", &smtp.SMTPError{Code: 450, Message: "mailbox busy"})
	rest := []string{"grey@example.com", "a@example.com", "b@example.com", "c@example.com"}
	for _, addr := range rest {
		expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": addr}), http.StatusOK)
		time.Sleep(5 * time.Millisecond) // queued in this order
	}
	for _, addr := range rest[1:] {
		e.smtp.last(t, addr)
	}
	e.smtp.mu.Lock()
	conns := e.smtp.rcptConns
	e.smtp.mu.Unlock()
	if conns != 3 {
		t.Fatalf("%d connections sent mail, want 3: the burst stopped at the greylisted message", conns)
	}
}

// An outage tells nobody who may sign in: with only addresses that may
// not (registration closed, nobody known), whose messages are never sent,
// the channel turns to 503 while the server is down, as it does for real
// users, and opens again when it is back.
func TestOutageSeenWithoutAnAllowedAlias(t *testing.T) {
	e := newEnv(t, withConfig("register_new_users false\n"+openLimits))
	e.smtp.setRejectMail(&smtp.SMTPError{Code: 421, Message: "service not available"})
	r := e.untilFailing("/auth/email/", map[string]string{"email": "stranger@example.com"})
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After: %v", r.header)
	}
	expectStatus(t, e.get("/auth/health"), http.StatusServiceUnavailable)
	e.smtp.setRejectMail(nil)
	clock.Advance(probeEvery)
	eventually(t, "the channel to open again", func() bool {
		return e.postForm("/auth/email/", map[string]string{"email": "stranger2@example.com"}).status == http.StatusOK
	})
	e.drain()
	if n := len(e.smtp.all()); n != 0 {
		t.Fatalf("%d mails to addresses that may not sign in", n)
	}
}

// The workers drop a message whose code was superseded or has expired,
// end to end: the greylisted address gets only its newest code once the
// server takes it, and an expired one gets nothing.
func TestWorkersDropSupersededAndExpired(t *testing.T) {
	e := newEnv(t, withConfig(openLimits))
	e.smtp.settle = nil
	grey := &smtp.SMTPError{Code: 451, Message: "greylisted"}
	e.smtp.setRejectTo("twice@example.com", grey)
	e.smtp.setRejectTo("late@example.com", grey)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "late@example.com"}), http.StatusOK)
	eventually(t, "a first attempt", func() bool { return e.smtp.rcptCount() >= 1 })
	clock.Advance(defaultCodeTTL - 5*time.Minute)
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "twice@example.com"}), http.StatusOK)
	eventually(t, "its first attempt", func() bool { return e.smtp.rcptCount() >= 3 })
	// A second code for twice@ supersedes the first; late@'s expires.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "twice@example.com"}), http.StatusOK)
	clock.Advance(6 * time.Minute)
	e.smtp.setRejectTo("twice@example.com", nil)
	e.smtp.setRejectTo("late@example.com", nil)
	clock.Advance(retryMax)
	code := e.smtp.code(t, "twice@example.com")
	e.drain()
	var to []string
	for _, m := range e.smtp.all() {
		to = append(to, m.To)
	}
	if !slices.Equal(to, []string{"twice@example.com"}) {
		t.Fatalf("mail went to %v, want the newest code to twice@example.com alone", to)
	}
	expectStatus(t, e.postForm("/auth/token/", map[string]string{"email": "twice@example.com", "token": code}), http.StatusOK)
}

// Realms never share a delivery queue: two realms on one store, with the
// same prefix and the same message settings but each its own SMTP server,
// each send through their own server only.
func TestRealmsDoNotShareAQueue(t *testing.T) {
	mailA, mailB, up := startSMTP(t), startSMTP(t), startUpstream(t)
	db := filepath.Join(t.TempDir(), "pwl.db")
	site := func(port int, realm string, mail *smtpServer) string {
		return fmt.Sprintf(`http://localhost:%d {
	passwordless {
		storage sqlite %s
		realm %s
		%s
		%s
	}
	reverse_proxy %s
}
`, port, db, realm, mail.emailBlock(), openLimits, strings.TrimPrefix(up.URL, "http://"))
	}
	c := newCluster(t, site(testPort, "a", mailA), site(testPort+1, "b", mailB))
	const n = 12
	for i := range n {
		for _, base := range []string{"http://localhost:9080", "http://localhost:9081"} {
			expectStatus(t, c.post(base, "/auth/email/", url.Values{"email": {fmt.Sprintf("r%d@example.com", i)}}, ""), http.StatusOK)
		}
	}
	drain(t, db)
	if a, b := len(mailA.all()), len(mailB.all()); a != n || b != n {
		t.Fatalf("realm a's server got %d mails and realm b's %d, want %d each", a, b, n)
	}
}

// TestReloadDoesNotWaitForASilentSMTPServer: a config reload waited for
// the delivery in flight. An SMTP server that accepts the connection and
// then says nothing held the stopping workers, and so the reload, for the
// whole SMTP timeout (60 s here), as go-mail watches the context only
// while connecting. caddytest gives a config load 5 s; the reload now
// ends the dialogue instead.
func TestReloadDoesNotWaitForASilentSMTPServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered, never closed by us until the end
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	e := newEnv(t, withEmail(fmt.Sprintf("email {\n from \"Login <login@example.com>\"\n smtp %s {\n tls none\n timeout 60s\n }\n }", ln.Addr())))
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "silent@example.com"}), http.StatusOK)
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery or probe connected to the SMTP server")
	}
	// A worker now waits for a greeting that never comes. The reload
	// stops the workers; caddytest fails the test if it takes 5 s.
	e.tester.InitServer(global()+fmt.Sprintf("http://localhost:%d {\n respond ok\n}\n", testPort), "caddyfile")
	if t.Failed() {
		t.Fatal("the reload waited for the silent SMTP server")
	}
}

// TestBrokenStoreIsNotLoggedEverySecond: an outbox over a store that
// fails every poll (here a closed one) logs the failed claim once per
// worker and the failed count once, not once a second each.
func TestBrokenStoreIsNotLoggedEverySecond(t *testing.T) {
	s := closedSQLite(t)
	core, logs := observer.New(zapcore.InfoLevel)
	sender := &logSender{logger: zap.NewNop(), channel: "email", render: func(Message) (string, error) { return "", nil }}
	o := newOutbox(s, map[AliasKind]Sender{KindEmail: sender}, zap.New(core),
		func(AliasKind) string { return "email" }, func(OutboxMessage) Message { return Message{} })
	// Each worker claims at once and then every outboxPoll: three failed
	// claims apiece, and two or three failed counts.
	time.Sleep(2*outboxPoll + outboxPoll/2)
	o.close()
	claims, counts := logs.FilterMessage("claiming queued messages"), logs.FilterMessage("counting queued messages")
	if claims.Len() != outboxWorkers || counts.Len() != 1 {
		t.Fatalf("%d lines of failed claims and %d of failed counts, want %d and 1", claims.Len(), counts.Len(), outboxWorkers)
	}
	if e := claims.All()[0]; e.Level != zapcore.ErrorLevel || !strings.Contains(e.ContextMap()["error"].(string), "closed") {
		t.Fatalf("claim failure logged as %v %v", e.Level, e.ContextMap())
	}
}
