package passwordless

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func testPing(t *testing.T, s Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("a working store: %v", err)
	}
}

// closedSQLite is a store that was closed: everything asked of it fails.
func closedSQLite(t *testing.T) *sqliteStore {
	t.Helper()
	s, err := newSQLite(filepath.Join(t.TempDir(), "closed.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Destruct(); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPingClosedStore: a store that cannot read answers an error.
func TestPingClosedStore(t *testing.T) {
	s := closedSQLite(t)
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("a closed store answers the ping")
	}
}

// down stops the SMTP server: its port refuses connections.
func (s *smtpServer) down() {
	s.srv.Close()
}

// up starts the SMTP server again on the same address.
func (s *smtpServer) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	old := s.srv
	s.srv = smtp.NewServer(s)
	s.srv.Domain, s.srv.AllowInsecureAuth, s.srv.TLSConfig = old.Domain, old.AllowInsecureAuth, old.TLSConfig
	s.srv.ReadTimeout, s.srv.WriteTimeout = old.ReadTimeout, old.WriteTimeout
	go s.srv.Serve(ln)
}

// TestHealthFollowsSMTP: health is 200 while mail goes out, 503 naming
// email (and nothing of the server) once the SMTP server is down, and 200
// again when it is back, found by a probe, without any code having to be
// sent first.
func TestHealthFollowsSMTP(t *testing.T) {
	e := newEnv(t)
	r := e.get("/auth/health")
	expectStatus(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Fatalf("health: %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("health may be cached: %q", r.header.Get("Cache-Control"))
	}

	before := scrape(t)
	e.smtp.down()
	// The request is answered at once; the worker's delivery fails.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "down@example.com"}), http.StatusOK)
	eventually(t, "health to see the failure", func() bool { return e.get("/auth/health").status == http.StatusServiceUnavailable })
	// The probe, not the delivery, turned the channel: wait for the
	// delivery's failure to be counted too.
	eventually(t, "the failed delivery", func() bool {
		return scrape(t)[`caddy_passwordless_delivery_failures_total{channel="email"}`] > before[`caddy_passwordless_delivery_failures_total{channel="email"}`]
	})
	// The message waits for its retry, and outbox_pending, counted once
	// every outboxPoll, shows it from the next count on: wait for that
	// count rather than depend on whether one fell in between.
	eventually(t, "outbox_pending to count the message awaiting its retry", func() bool {
		return scrape(t)[pendingEmail] == before[pendingEmail]+1
	})
	expectDeltas(t, deltas(before, scrape(t)), map[string]float64{
		`caddy_passwordless_delivery_failures_total{channel="email"}`: 1,
		`caddy_passwordless_delivery_seconds_count{channel="email"}`:  1,
		pendingEmail: 1,
	})

	down := func() {
		t.Helper()
		r := e.get("/auth/health")
		expectStatus(t, r, http.StatusServiceUnavailable)
		parts, _ := r.json["down"].([]any)
		if r.str("status") != "unavailable" || !slices.Equal(parts, []any{"email"}) {
			t.Fatalf("health while SMTP is down: %s", r.body)
		}
		_, port, _ := net.SplitHostPort(e.smtp.addr)
		if strings.Contains(string(r.body), port) || strings.Contains(string(r.body), "127.0.0.1") {
			t.Fatalf("health names the server: %s", r.body)
		}
	}
	down()
	clock.Advance(probeEvery)
	down() // probed again, still down

	e.smtp.up(t)
	// Probed a moment ago: however often health is polled, the provider
	// is not probed again before probeEvery.
	down()
	clock.Advance(probeEvery)
	expectStatus(t, e.get("/auth/health"), http.StatusOK)
	expectStatus(t, e.get("/auth/health"), http.StatusOK)

	// Codes go out again.
	expectStatus(t, e.postForm("/auth/email/", map[string]string{"email": "back@example.com"}), http.StatusOK)
	e.smtp.code(t, "back@example.com")
}

// TestHealthFollowsTwilio: likewise for SMS, with Twilio answering 500
// and then working again; the probe reads the account and sends nothing.
func TestHealthFollowsTwilio(t *testing.T) {
	tw := startTwilio(t)
	e := newEnv(t, withoutEmail(), smsBlock(t, tw, ""))
	expectStatus(t, e.get("/auth/health"), http.StatusOK)

	tw.fail(http.StatusInternalServerError, 20500, "Internal Server Error")
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551230001"}), http.StatusOK)
	eventually(t, "health to see the failure", func() bool { return e.get("/auth/health").status == http.StatusServiceUnavailable })
	r := e.get("/auth/health")
	expectStatus(t, r, http.StatusServiceUnavailable)
	if parts, _ := r.json["down"].([]any); !slices.Equal(parts, []any{"mobile"}) {
		t.Fatalf("health while Twilio fails: %s", r.body)
	}
	if strings.Contains(string(r.body), tw.SID) || strings.Contains(string(r.body), strings.TrimPrefix(tw.URL, "http://")) {
		t.Fatalf("health names the account or the server: %s", r.body)
	}

	tw.failNone()
	probes := tw.accountReads()
	clock.Advance(probeEvery)
	eventually(t, "health to see Twilio back", func() bool { return e.get("/auth/health").status == http.StatusOK })
	if tw.accountReads() == probes {
		t.Fatal("the channel came back without a probe")
	}
	// Probes send nothing: once the queue is empty, the one message
	// Twilio took is the failed SMS, retried. (Counting messages around
	// one health call instead would count that retry as a probe's.)
	e.drain()
	if msgs := tw.messages(); len(msgs) != 1 || msgs[0].To != "+15551230001" {
		t.Fatalf("Twilio took %+v, want the one retried SMS", msgs)
	}
	expectStatus(t, e.postForm("/auth/mobile/", map[string]string{"mobile": "+15551230002"}), http.StatusOK)
}

// /health answers 503 naming the storage, through Caddy, while the
// PostgreSQL store cannot be reached, within its time limit, and 200 once
// it can again. The database is reached through a TCP relay the test
// cuts, as a network failure would.
func TestHealthStoreDown(t *testing.T) {
	dsn := postgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	relay := startRelay(t, u.Host)
	u.Host = relay.addr
	e := newEnv(t, withConfig(fmt.Sprintf("storage postgres %q", u.String())))
	expectStatus(t, e.get("/auth/health"), http.StatusOK)

	relay.cut()
	start := time.Now()
	r := e.get("/auth/health")
	expectStatus(t, r, http.StatusServiceUnavailable)
	if parts, _ := r.json["down"].([]any); !slices.Equal(parts, []any{partStorage}) || strings.Contains(string(r.body), relay.addr) {
		t.Fatalf("health with the store down: %s", r.body)
	}
	if took := time.Since(start); took > healthTimeout+time.Second {
		t.Errorf("health took %v with the store down", took)
	}
	relay.restore(t)
	eventually(t, "health to recover", func() bool { return e.get("/auth/health").status == http.StatusOK })
}

// relay forwards TCP connections to target until cut.
type relay struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), target: target}
	r.serve(ln)
	t.Cleanup(r.cut)
	return r
}

func (r *relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection: the database is gone.
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// restore listens on the same address again.
func (r *relay) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	r.serve(ln)
}
