package passwordless

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// twilioServer is a real HTTP server, in process, that plays Twilio's
// Messages API (POST /2010-04-01/Accounts/{AccountSid}/Messages.json) and
// keeps the messages it accepts. It is safe for concurrent use.
type twilioServer struct {
	URL   string // http://127.0.0.1:port, for api_url
	SID   string // the account SID it accepts
	Token string // the auth token it accepts

	srv  *httptest.Server
	done chan struct{} // closed on cleanup: hanging requests give up

	mu        sync.Mutex
	msgs      []twilioMessage
	failure   *twilioFailure // when set, every request is answered with it
	hanging   bool           // when set, requests wait until cancelled
	requests  int            // requests seen, whatever the answer
	accounts  int            // reads of the account resource (probes)
	seq       int
	lastReqID string
	refused   []string // bodies of the messages answered with a failure
	// settle, when set, waits until the plugin's outbox is empty, so
	// that the last message is the one the test just asked for.
	settle func()
}

// twilioMessage is a message the server accepted.
type twilioMessage struct {
	SID                 string
	To                  string
	From                string
	MessagingServiceSID string
	Body                string
	RequestID           string
}

type twilioFailure struct {
	status  int
	code    int
	message string
}

// startTwilio starts a fake Twilio with a fresh account SID and token.
func startTwilio(t testing.TB) *twilioServer {
	t.Helper()
	s := &twilioServer{
		SID:   "AC" + randomHex(t, 16),
		Token: randomHex(t, 16),
		done:  make(chan struct{}),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	t.Cleanup(func() {
		close(s.done)
		s.srv.Close()
	})
	return s
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// fail makes every following request fail with HTTP status and a Twilio
// error body carrying code and msg. With code 0 the body is plain text,
// not Twilio's JSON, as from a proxy or an outage.
func (s *twilioServer) fail(status, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = &twilioFailure{status: status, code: code, message: msg}
}

// failNone undoes fail.
func (s *twilioServer) failNone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = nil
}

// hang makes requests wait, without an answer, until the client gives up
// (or the test ends).
func (s *twilioServer) hang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hanging = on
}

// messages returns the accepted messages, oldest first.
func (s *twilioServer) messages() []twilioMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]twilioMessage(nil), s.msgs...)
}

// hits is the number of requests the server has seen, whatever the
// answer, but for reads of the account (probes, see accountReads).
func (s *twilioServer) hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests - s.accounts
}

// accountReads is how many times the account resource was read.
func (s *twilioServer) accountReads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts
}

// lastRequestID is the Twilio-Request-Id of the last answer.
func (s *twilioServer) lastRequestID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReqID
}

// last returns the last message accepted for to, waiting a while for the
// outbox to deliver one, and fails the test if none comes.
func (s *twilioServer) last(t testing.TB, to string) twilioMessage {
	t.Helper()
	if s.settle != nil {
		s.settle()
	}
	var msgs []twilioMessage
	for deadline := time.Now().Add(deliveryWait); ; time.Sleep(10 * time.Millisecond) {
		msgs = s.messages()
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].To == to {
				return msgs[i]
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Fatalf("no SMS for %s among %d messages", to, len(msgs))
	return twilioMessage{}
}

// code returns the code in the last message to to.
func (s *twilioServer) code(t testing.TB, to string) string {
	t.Helper()
	m := s.last(t, to)
	c := sixDigits.FindString(m.Body)
	if c == "" {
		t.Fatalf("SMS to %s has no code: %q", to, m.Body)
	}
	return c
}

func (s *twilioServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.seq++
	reqID := fmt.Sprintf("RQ%032x", s.seq)
	s.lastReqID = reqID
	failure, hanging := s.failure, s.hanging
	s.mu.Unlock()
	w.Header().Set("Twilio-Request-Id", reqID)

	if err := r.ParseForm(); err != nil {
		twilioError(w, http.StatusBadRequest, 20001, "Invalid request body")
		return
	}
	if hanging {
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != s.SID || pass != s.Token {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		twilioError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/2010-04-01/Accounts/"+s.SID+".json" {
		s.mu.Lock()
		s.accounts++
		s.mu.Unlock()
		s.serveAccount(w, failure)
		return
	}
	if r.URL.Path != "/2010-04-01/Accounts/"+s.SID+"/Messages.json" {
		twilioError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if r.Method != http.MethodPost {
		twilioError(w, http.StatusMethodNotAllowed, 20004, "Method not allowed")
		return
	}
	if failure != nil {
		s.mu.Lock()
		s.refused = append(s.refused, r.PostForm.Get("Body"))
		s.mu.Unlock()
		if failure.code == 0 {
			http.Error(w, "Internal Server Error", failure.status)
			return
		}
		twilioError(w, failure.status, failure.code, failure.message)
		return
	}
	m := twilioMessage{
		To:                  r.PostForm.Get("To"),
		From:                r.PostForm.Get("From"),
		MessagingServiceSID: r.PostForm.Get("MessagingServiceSid"),
		Body:                r.PostForm.Get("Body"),
		RequestID:           reqID,
	}
	switch {
	case m.To == "":
		twilioError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case m.From == "" && m.MessagingServiceSID == "":
		twilioError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case m.Body == "":
		twilioError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case m.To == m.From:
		twilioError(w, http.StatusBadRequest, 21266, "'To' and 'From' number cannot be the same: "+m.To)
		return
	}

	s.mu.Lock()
	s.seq++
	m.SID = fmt.Sprintf("SM%032x", s.seq)
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()

	now := time.Now().UTC().Format(time.RFC1123Z)
	nullable := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	uri := "/2010-04-01/Accounts/" + s.SID + "/Messages/" + m.SID
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{
		"account_sid":           s.SID,
		"api_version":           "2010-04-01",
		"body":                  m.Body,
		"date_created":          now,
		"date_sent":             nil,
		"date_updated":          now,
		"direction":             "outbound-api",
		"error_code":            nil,
		"error_message":         nil,
		"from":                  nullable(m.From),
		"messaging_service_sid": nullable(m.MessagingServiceSID),
		"num_media":             "0",
		"num_segments":          "1",
		"price":                 nil,
		"price_unit":            "USD",
		"sid":                   m.SID,
		"status":                "queued",
		"subresource_uris":      map[string]string{"media": uri + "/Media.json"},
		"to":                    m.To,
		"uri":                   uri + ".json",
	})
}

// serveAccount answers GET /2010-04-01/Accounts/{AccountSid}.json, the
// account resource, or the failure set with fail.
func (s *twilioServer) serveAccount(w http.ResponseWriter, failure *twilioFailure) {
	// A 400 or 422 is about one message (a number, a body): the account
	// still answers, as Twilio's does.
	if failure != nil && failure.status != http.StatusBadRequest && failure.status != http.StatusUnprocessableEntity {
		twilioError(w, failure.status, failure.code, failure.message)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(map[string]any{"sid": s.SID, "status": "active", "type": "Full"})
}

// twilioError answers in the shape of Twilio's REST errors.
func twilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"code":      code,
		"message":   msg,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
		"status":    status,
	})
}
