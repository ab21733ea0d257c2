package passwordless

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const twilioTestFrom = "+15005550006"

// newTestTwilioSender builds a sender for ts, with a logger whose entries
// the test can read. edit may change the config first.
func newTestTwilioSender(t *testing.T, ts *twilioServer, edit func(*TwilioConfig)) (*twilioSender, *observer.ObservedLogs) {
	t.Helper()
	c := TwilioConfig{AccountSID: ts.SID, AuthToken: ts.Token, From: twilioTestFrom, APIURL: ts.URL, Timeout: caddy.Duration(5 * time.Second)}
	if edit != nil {
		edit(&c)
	}
	body, err := parseTextTemplate("sms", "Your login code is {code}. It expires in {{.Minutes}} minutes.")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := newTwilioSender(c, body, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func testSMS(to, code string) Message {
	return Message{To: to, Code: code, Purpose: purposeLogin, TTL: 10 * time.Minute}
}

// logText is every log entry, message and fields, as text.
func logText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}

// assertNoSecrets checks that neither the error nor any log entry carries
// the auth token or the code.
func assertNoSecrets(t *testing.T, err error, logs *observer.ObservedLogs, token, code string) {
	t.Helper()
	text := logText(logs)
	if err != nil {
		text += err.Error()
	}
	for what, secret := range map[string]string{"auth token": token, "code": code} {
		if strings.Contains(text, secret) {
			t.Errorf("the %s appears in the error or the log:\n%s", what, text)
		}
	}
}

func TestTwilioSendsSMS(t *testing.T) {
	ts := startTwilio(t)
	s, logs := newTestTwilioSender(t, ts, nil)
	if err := s.Send(context.Background(), testSMS("+15551234567", "48151623")); err != nil {
		t.Fatal(err)
	}
	m := ts.last(t, "+15551234567")
	if m.From != twilioTestFrom || m.MessagingServiceSID != "" {
		t.Errorf("From %q, MessagingServiceSid %q", m.From, m.MessagingServiceSID)
	}
	if got := ts.code(t, "+15551234567"); got != "48151623" {
		t.Errorf("code %q in %q", got, m.Body)
	}
	if !strings.Contains(m.Body, "10 minutes") {
		t.Errorf("body %q", m.Body)
	}
	if len(ts.messages()) != 1 || ts.hits() != 1 {
		t.Errorf("%d messages in %d requests", len(ts.messages()), ts.hits())
	}
	// The success is logged with Twilio's ids, and nothing secret.
	sent := logs.FilterMessage("twilio accepted the message").All()
	if len(sent) != 1 {
		t.Fatalf("log:\n%s", logText(logs))
	}
	fields := sent[0].ContextMap()
	if fields["message_sid"] != m.SID || fields["request_id"] != m.RequestID {
		t.Errorf("logged %v, want sid %s and request %s", fields, m.SID, m.RequestID)
	}
	assertNoSecrets(t, nil, logs, ts.Token, "48151623")
}

func TestTwilioMessagingService(t *testing.T) {
	ts := startTwilio(t)
	s, _ := newTestTwilioSender(t, ts, func(c *TwilioConfig) {
		c.From = ""
		c.MessagingServiceSID = "MG0123456789abcdef0123456789abcdef"
	})
	if err := s.Send(context.Background(), testSMS("+447700900123", "123456")); err != nil {
		t.Fatal(err)
	}
	m := ts.last(t, "+447700900123")
	if m.MessagingServiceSID != "MG0123456789abcdef0123456789abcdef" || m.From != "" {
		t.Errorf("From %q, MessagingServiceSid %q", m.From, m.MessagingServiceSID)
	}
	if got := ts.code(t, "+447700900123"); got != "123456" {
		t.Errorf("code %q", got)
	}
}

func TestTwilioBadRecipient(t *testing.T) {
	for _, tc := range []struct {
		code int
		msg  string
	}{
		{21211, "Invalid 'To' Phone Number: +1555000000X"},
		{21614, "'To' number is not a valid mobile number"},
		{21408, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"},
		{21610, "Attempt to send to unsubscribed recipient"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			ts := startTwilio(t)
			s, logs := newTestTwilioSender(t, ts, nil)
			ts.fail(http.StatusBadRequest, tc.code, tc.msg)
			err := s.Send(context.Background(), testSMS("+15551234567", "271828"))
			if !errors.Is(err, errBadRecipient) {
				t.Fatalf("got %v, want errBadRecipient", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tc.code)) {
				t.Errorf("error %q does not name Twilio's code", err)
			}
			refused := logs.FilterMessage("twilio refused the recipient").All()
			if len(refused) != 1 {
				t.Fatalf("log:\n%s", logText(logs))
			}
			f := refused[0].ContextMap()
			if f["twilio_code"] != int64(tc.code) || f["http_status"] != int64(400) || f["request_id"] != ts.lastRequestID() {
				t.Errorf("logged %v", f)
			}
			t.Logf("error: %v\nlog:\n%s", err, logText(logs))
			assertNoSecrets(t, err, logs, ts.Token, "271828")
			if len(ts.messages()) != 0 {
				t.Error("a refused message was recorded")
			}
		})
	}
}

// Any other 4xx is Twilio refusing this one message, not Twilio in
// trouble: anyone can ask for a code to the site's own number (21266).
func TestTwilioMessageRefusals(t *testing.T) {
	for _, tc := range []struct {
		status, code int
		msg          string
	}{
		{400, 21266, "'To' and 'From' number cannot be the same"},
		{400, 21212, "Invalid 'From' Phone Number"},
		{400, 0, ""},
		{422, 0, ""},
	} {
		t.Run(fmt.Sprint(tc.status, "/", tc.code), func(t *testing.T) {
			ts := startTwilio(t)
			s, logs := newTestTwilioSender(t, ts, nil)
			ts.fail(tc.status, tc.code, tc.msg)
			err := s.Send(context.Background(), testSMS("+15550000000", "271828"))
			if !errors.Is(err, errBadRecipient) || errors.Is(err, errTransient) {
				t.Fatalf("got %v, want a permanent refusal of the message", err)
			}
			if logs.FilterMessage("twilio refused the message").Len() != 1 || logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 0 {
				t.Fatalf("log:\n%s", logText(logs))
			}
			assertNoSecrets(t, err, logs, ts.Token, "271828")
		})
	}
}

func TestTwilioServiceFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*twilioServer, *TwilioConfig)
		want  int // the HTTP status the log should carry
		code  int // the Twilio code the log should carry, 0 for none
	}{
		{"wrong token", func(ts *twilioServer, c *TwilioConfig) { c.AuthToken = strings.Repeat("0", 32) }, 401, 20003},
		{"wrong account", func(ts *twilioServer, c *TwilioConfig) { c.AccountSID = "AC" + strings.Repeat("0", 32) }, 401, 20003},
		{"plain 500", func(ts *twilioServer, c *TwilioConfig) { ts.fail(500, 0, "") }, 500, 0},
		{"twilio 500", func(ts *twilioServer, c *TwilioConfig) { ts.fail(500, 20500, "An internal server error has occurred") }, 500, 20500},
		{"503", func(ts *twilioServer, c *TwilioConfig) { ts.fail(503, 20503, "Service unavailable") }, 503, 20503},
		{"rate limited", func(ts *twilioServer, c *TwilioConfig) { ts.fail(429, 20429, "Too Many Requests") }, 429, 20429},
		{"forbidden", func(ts *twilioServer, c *TwilioConfig) { ts.fail(403, 20403, "Forbidden") }, 403, 20403},
		{"no such account", func(ts *twilioServer, c *TwilioConfig) { ts.fail(404, 20404, "Not found") }, 404, 20404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTwilio(t)
			var token string
			s, logs := newTestTwilioSender(t, ts, func(c *TwilioConfig) {
				tc.setup(ts, c)
				token = c.AuthToken
			})
			err := s.Send(context.Background(), testSMS("+15551234567", "314159"))
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, errBadRecipient) {
				t.Fatalf("%v is errBadRecipient", err)
			}
			errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
			if len(errs) != 1 {
				t.Fatalf("log:\n%s", logText(logs))
			}
			f := errs[0].ContextMap()
			if f["http_status"] != int64(tc.want) || f["request_id"] != ts.lastRequestID() {
				t.Errorf("logged %v, want status %d and request %s", f, tc.want, ts.lastRequestID())
			}
			if tc.code != 0 && f["twilio_code"] != int64(tc.code) {
				t.Errorf("logged %v, want twilio_code %d", f, tc.code)
			}
			t.Logf("error: %v\nlog:\n%s", err, logText(logs))
			assertNoSecrets(t, err, logs, token, "314159")
			assertNoSecrets(t, err, logs, ts.Token, "314159")
			if len(ts.messages()) != 0 {
				t.Error("a failed message was recorded")
			}
		})
	}
}

func TestTwilioRecoversAfterFailure(t *testing.T) {
	ts := startTwilio(t)
	s, _ := newTestTwilioSender(t, ts, nil)
	ts.fail(500, 0, "")
	if err := s.Send(context.Background(), testSMS("+15551234567", "111111")); err == nil {
		t.Fatal("no error")
	}
	ts.failNone()
	if err := s.Send(context.Background(), testSMS("+15551234567", "222222")); err != nil {
		t.Fatal(err)
	}
	if got := ts.code(t, "+15551234567"); got != "222222" {
		t.Errorf("code %q", got)
	}
}

func TestTwilioHangingAPITimesOut(t *testing.T) {
	ts := startTwilio(t)
	s, logs := newTestTwilioSender(t, ts, func(c *TwilioConfig) { c.Timeout = caddy.Duration(300 * time.Millisecond) })
	ts.hang(true)
	done := make(chan error, 1)
	go func() { done <- s.Send(context.Background(), testSMS("+15551234567", "161803")) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error")
		}
		if errors.Is(err, errBadRecipient) {
			t.Fatalf("%v is errBadRecipient", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want a deadline error", err)
		}
		t.Logf("error: %v\nlog:\n%s", err, logText(logs))
		assertNoSecrets(t, err, logs, ts.Token, "161803")
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not give up on a hanging API")
	}
}

func TestTwilioCallerCancels(t *testing.T) {
	ts := startTwilio(t)
	s, _ := newTestTwilioSender(t, ts, nil)
	ts.hang(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx, testSMS("+15551234567", "161803")) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send ignored its context")
	}
}

func TestTwilioConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ts := startTwilio(t)
	s, logs := newTestTwilioSender(t, ts, func(c *TwilioConfig) { c.APIURL = "http://" + addr })
	err = s.Send(context.Background(), testSMS("+15551234567", "577215"))
	if err == nil || errors.Is(err, errBadRecipient) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name %s", err, addr)
	}
	if logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 1 {
		t.Errorf("log:\n%s", logText(logs))
	}
	t.Logf("error: %v\nlog:\n%s", err, logText(logs))
	assertNoSecrets(t, err, logs, ts.Token, "577215")
}

// A relay under a path prefix gets Twilio's path after the prefix.
func TestTwilioAPIURLWithPath(t *testing.T) {
	ts := startTwilio(t)
	relay := httptest.NewServer(http.StripPrefix("/relay/twilio", ts.srv.Config.Handler))
	t.Cleanup(relay.Close)
	s, _ := newTestTwilioSender(t, ts, func(c *TwilioConfig) { c.APIURL = relay.URL + "/relay/twilio/" })
	if err := s.Send(context.Background(), testSMS("+15551234567", "987654")); err != nil {
		t.Fatal(err)
	}
	if got := ts.code(t, "+15551234567"); got != "987654" {
		t.Errorf("code %q", got)
	}
}

func TestTwilioConcurrentSends(t *testing.T) {
	ts := startTwilio(t)
	s, _ := newTestTwilioSender(t, ts, nil)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Send(context.Background(), testSMS(fmt.Sprintf("+1555000%04d", i), fmt.Sprintf("%06d", 100000+i)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		if got, want := ts.code(t, fmt.Sprintf("+1555000%04d", i)), fmt.Sprintf("%06d", 100000+i); got != want {
			t.Errorf("message %d: code %s, want %s", i, got, want)
		}
	}
}

func TestNewTwilioSenderValidation(t *testing.T) {
	const token = "f00dfacef00dfacef00dfacef00dface"
	valid := TwilioConfig{AccountSID: "AC0123456789abcdef0123456789abcdef", AuthToken: token, From: twilioTestFrom}
	body, err := parseTextTemplate("sms", "{code}")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newTwilioSender(valid, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.apiURL.String() != "https://api.twilio.com" || s.timeout != 10*time.Second {
		t.Errorf("defaults: api_url %s, timeout %s", s.apiURL, s.timeout)
	}

	for _, tc := range []struct {
		name string
		edit func(*TwilioConfig)
		want string
	}{
		{"no account", func(c *TwilioConfig) { c.AccountSID = "" }, "account_sid"},
		{"bad account", func(c *TwilioConfig) { c.AccountSID = "AC 123" }, "account_sid"},
		{"no token", func(c *TwilioConfig) { c.AuthToken = "" }, "auth_token"},
		{"bad token", func(c *TwilioConfig) { c.AuthToken = token + "!" }, "auth_token"},
		{"no sender", func(c *TwilioConfig) { c.From = "" }, "messaging_service_sid"},
		{"both senders", func(c *TwilioConfig) { c.MessagingServiceSID = "MG0123456789abcdef0123456789abcdef" }, "not both"},
		{"relative url", func(c *TwilioConfig) { c.APIURL = "/2010-04-01" }, "api_url"},
		{"host only", func(c *TwilioConfig) { c.APIURL = "api.twilio.com" }, "api_url"},
		{"ftp url", func(c *TwilioConfig) { c.APIURL = "ftp://api.twilio.com" }, "api_url"},
		{"no host", func(c *TwilioConfig) { c.APIURL = "https://" }, "api_url"},
		{"bad url", func(c *TwilioConfig) { c.APIURL = "https://[::1" }, "api_url"},
		{"url with credentials", func(c *TwilioConfig) { c.APIURL = "https://AC1:" + token + "@api.twilio.com" }, "api_url"},
		{"url with query", func(c *TwilioConfig) { c.APIURL = "https://api.twilio.com/?x=1" }, "api_url"},
		{"negative timeout", func(c *TwilioConfig) { c.Timeout = caddy.Duration(-time.Second) }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			_, err := newTwilioSender(c, body, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %s", err, tc.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q carries the auth token", err)
			}
		})
	}
	if _, err := newTwilioSender(valid, nil, nil); err == nil {
		t.Error("no error without a template")
	}
}

// Answers that are not Twilio's: a 2xx means the message was taken even
// if its body does not decode; a redirect is not followed and fails.
func TestTwilioOddAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		ok     bool
	}{
		{"created, not JSON", http.StatusCreated, "queued", true},
		{"redirect", http.StatusFound, `{}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTwilio(t)
			odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Twilio-Request-Id", "RQodd")
				w.Header().Set("Location", "http://example.invalid/")
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			t.Cleanup(odd.Close)
			s, logs := newTestTwilioSender(t, ts, func(c *TwilioConfig) { c.APIURL = odd.URL })
			err := s.Send(context.Background(), testSMS("+15551234567", "424242"))
			t.Logf("error: %v\nlog:\n%s", err, logText(logs))
			if (err == nil) != tc.ok || errors.Is(err, errBadRecipient) {
				t.Fatalf("got %v", err)
			}
			if !strings.Contains(logText(logs), "RQodd") {
				t.Errorf("request id not logged:\n%s", logText(logs))
			}
			assertNoSecrets(t, err, logs, ts.Token, "424242")
		})
	}
}
