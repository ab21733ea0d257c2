package passwordless

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpServer is a real SMTP server, in process, that keeps what it is sent.
type smtpServer struct {
	addr    string // 127.0.0.1:port
	tlsAddr string // localhost:port, the name on the certificate
	srv     *smtp.Server

	mu       sync.Mutex
	messages []receivedMail
	reject   *smtp.SMTPError // when set, RCPT is refused with it
	// rejectTo refuses RCPT for one address (lower case) with its error.
	rejectTo   map[string]*smtp.SMTPError
	rejectMail *smtp.SMTPError // when set, MAIL FROM is refused with it
	mails      int             // MAIL FROM commands seen, probes included
	rcptConns  int             // sessions that sent at least one RCPT
	failData   *smtp.SMTPError // when set, DATA is read, kept, then refused with it
	user       string          // when set, AUTH PLAIN is required
	pass       string
	rcpts      int                  // RCPT commands seen
	delay      func() time.Duration // when set, DATA takes this long
	sessions   int                  // connections (SMTP sessions) opened
	// settle, when set, waits until the plugin's outbox is empty, so
	// that the last message is the one the test just asked for.
	settle func()
}

type receivedMail struct {
	From, To string
	Header   mail.Header
	Text     string
	HTML     string
}

// startSMTP starts a server that offers STARTTLS with the test CA's
// certificate for localhost; with implicit, it speaks TLS from the start.
func startSMTP(t testing.TB, implicit ...bool) *smtpServer {
	t.Helper()
	s := &smtpServer{}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "localhost"
	s.srv.AllowInsecureAuth = true
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.TLSConfig = testServerTLS
	var ln net.Listener
	var err error
	if len(implicit) > 0 && implicit[0] {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", testServerTLS)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	_, port, _ := net.SplitHostPort(s.addr)
	s.tlsAddr = "localhost:" + port
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *smtpServer) setReject(e *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject = e
}

// setRejectTo refuses RCPT TO for addr with e, or no longer when e is nil.
func (s *smtpServer) setRejectTo(addr string, e *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejectTo == nil {
		s.rejectTo = map[string]*smtp.SMTPError{}
	}
	s.rejectTo[strings.ToLower(addr)] = e
}

// setRejectMail refuses MAIL FROM with e, or no longer when e is nil.
func (s *smtpServer) setRejectMail(e *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectMail = e
}

// mailCount is how many MAIL FROM commands the server has seen.
func (s *smtpServer) mailCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails
}

func (s *smtpServer) all() []receivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedMail(nil), s.messages...)
}

// last returns the last message sent to rcpt, waiting a while for the
// outbox to deliver one, and fails the test if none comes.
func (s *smtpServer) last(t testing.TB, rcpt string) receivedMail {
	t.Helper()
	if s.settle != nil {
		s.settle()
	}
	var msgs []receivedMail
	for deadline := time.Now().Add(deliveryWait); ; time.Sleep(10 * time.Millisecond) {
		msgs = s.all()
		for i := len(msgs) - 1; i >= 0; i-- {
			if strings.EqualFold(msgs[i].To, rcpt) {
				return msgs[i]
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Fatalf("no mail for %s among %d messages", rcpt, len(msgs))
	return receivedMail{}
}

// rcptCount is how many RCPT commands the server has seen, refused ones
// included.
func (s *smtpServer) rcptCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcpts
}

var sixDigits = regexp.MustCompile(`\b\d{6,10}\b`)

// code returns the code in the last mail to rcpt, checking that the text
// and the HTML part carry the same one.
func (s *smtpServer) code(t testing.TB, rcpt string) string {
	t.Helper()
	m := s.last(t, rcpt)
	text, html := sixDigits.FindString(m.Text), sixDigits.FindString(m.HTML)
	if text == "" || text != html {
		t.Fatalf("mail to %s: code in text %q, in HTML %q\ntext: %s\nhtml: %s", rcpt, text, html, m.Text, m.HTML)
	}
	return text
}

func (s *smtpServer) NewSession(*smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.sessions++
	s.mu.Unlock()
	return &smtpSession{srv: s}, nil
}

type smtpSession struct {
	srv    *smtpServer
	rcpted bool
	authed bool
	from   string
	to     []string
}

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.srv.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.srv.user || password != ss.srv.pass {
			return errors.New("invalid credentials")
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.user != "" && !ss.authed {
		return smtp.ErrAuthRequired
	}
	ss.srv.mu.Lock()
	ss.srv.mails++
	rej := ss.srv.rejectMail
	ss.srv.mu.Unlock()
	if rej != nil {
		return rej
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.srv.mu.Lock()
	rej := ss.srv.reject
	if r := ss.srv.rejectTo[strings.ToLower(to)]; r != nil {
		rej = r
	}
	ss.srv.rcpts++
	if !ss.rcpted {
		ss.rcpted = true
		ss.srv.rcptConns++
	}
	ss.srv.mu.Unlock()
	if rej != nil {
		return rej
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	ss.srv.mu.Lock()
	delay := ss.srv.delay
	ss.srv.mu.Unlock()
	if delay != nil {
		time.Sleep(delay())
	}
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	rm := receivedMail{From: ss.from, Header: msg.Header}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	// multipart decodes quoted-printable parts on its own.
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(part)
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch ct {
		case "text/plain":
			rm.Text = string(body)
		case "text/html":
			rm.HTML = string(body)
		}
	}
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	for _, to := range ss.to {
		rm.To = to
		ss.srv.messages = append(ss.srv.messages, rm)
	}
	if ss.srv.failData != nil {
		return ss.srv.failData
	}
	return nil
}

func (ss *smtpSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *smtpSession) Logout() error { return nil }

// emailBlock is a passwordless email block that sends to this server.
func (s *smtpServer) emailBlock() string {
	return fmt.Sprintf("email {\n\t\t\tfrom login@example.com\n\t\t\tsmtp %s {\n\t\t\t\ttls none\n\t\t\t}\n\t\t}", s.addr)
}
