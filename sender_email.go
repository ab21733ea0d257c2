package passwordless

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net"
	"net/textproto"
	"strconv"
	"text/template"
	"time"

	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// emailSender renders the text and HTML parts and hands them to SMTP, or
// to the log when no SMTP server is configured.
type emailSender struct {
	from    string
	subject string
	text    *template.Template
	html    *htmltemplate.Template
	smtp    *SMTPConfig // nil: log instead
	log     *logSender
}

func (e *emailSender) renderText(m Message) (string, error) {
	return render(e.text, newTemplateData(m))
}

func (e *emailSender) Send(ctx context.Context, m Message) error {
	b := e.openBurst()
	defer b.Close()
	return b.Send(ctx, m)
}

func (e *emailSender) openBurst() burst { return &emailBurst{e: e} }

// emailBurst sends several messages over one SMTP connection, dialled at
// the first and dropped after a transient failure, so that a burst of
// codes costs one TLS handshake and one login, not one each.
type emailBurst struct {
	e      *emailSender
	client *mail.Client
	conn   *smtp.Client
}

func (b *emailBurst) Send(ctx context.Context, m Message) error {
	e := b.e
	if e.smtp == nil {
		return e.log.Send(ctx, m)
	}
	msg, err := e.compose(m)
	if err != nil {
		return err
	}
	if b.conn == nil {
		client, err := e.client()
		if err != nil {
			return err
		}
		conn, err := client.DialToSMTPClientWithContext(ctx)
		if err != nil {
			return smtpFailure(e.smtp.Address, err)
		}
		b.client, b.conn = client, conn
	}
	if err := b.client.SendWithSMTPClient(b.conn, msg); err != nil {
		err = smtpFailure(e.smtp.Address, err)
		if errors.Is(err, errTransient) {
			b.Close()
		}
		return err
	}
	return nil
}

func (b *emailBurst) Close() error {
	if b.conn == nil {
		return nil
	}
	err := b.client.CloseWithSMTPClient(b.conn)
	b.client, b.conn = nil, nil
	return err
}

// smtpFailure classifies what the SMTP server or the network answered: a
// 5xx to RCPT is the recipient refused, another 5xx a permanent refusal,
// and a 4xx, a timeout or a connection that failed is transient.
func smtpFailure(addr string, err error) error {
	code, rcpt := 0, false
	var se *mail.SendError
	var te *textproto.Error
	switch {
	case errors.As(err, &se):
		code, rcpt = se.ErrorCode(), se.Reason == mail.ErrSMTPRcptTo
	case errors.As(err, &te):
		code = te.Code
	}
	switch {
	case code >= 500 && rcpt:
		return fmt.Errorf("%w: smtp %d: %v", errBadRecipient, code, err)
	case code >= 500:
		return fmt.Errorf("sending mail through %s: smtp %d: %w", addr, code, err)
	}
	return fmt.Errorf("%w: sending mail through %s: %w", errTransient, addr, err)
}

// compose renders m into a message with a text and an HTML part.
func (e *emailSender) compose(m Message) (*mail.Msg, error) {
	data := newTemplateData(m)
	text, err := render(e.text, data)
	if err != nil {
		return nil, fmt.Errorf("rendering text template: %w", err)
	}
	html, err := render(e.html, data)
	if err != nil {
		return nil, fmt.Errorf("rendering HTML template: %w", err)
	}
	msg := mail.NewMsg()
	if err := msg.From(e.from); err != nil {
		return nil, fmt.Errorf("from address: %w", err)
	}
	// The address was validated by the handler; go-mail checks it again
	// and encodes headers itself, so no input reaches a header raw.
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRecipient, err)
	}
	msg.Subject(e.subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(mail.TypeTextPlain, text)
	msg.AddAlternativeString(mail.TypeTextHTML, html)
	return msg, nil
}

func (e *emailSender) client() (*mail.Client, error) {
	c := e.smtp
	host, portStr, err := net.SplitHostPort(c.Address)
	if err != nil {
		return nil, fmt.Errorf("smtp address %q: %w", c.Address, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("smtp port %q: %w", portStr, err)
	}
	timeout := time.Duration(c.Timeout)
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	opts := []mail.Option{mail.WithPort(port), mail.WithTimeout(timeout)}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	switch c.TLS {
	case "", "starttls":
		// Mandatory: a server that does not offer STARTTLS is refused
		// rather than being sent the code in the clear.
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory), mail.WithTLSConfig(tc))
	case "implicit":
		opts = append(opts, mail.WithSSL(), mail.WithTLSConfig(tc))
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		return nil, fmt.Errorf("unknown smtp tls mode %q", c.TLS)
	}
	if c.Username != "" {
		auth := mail.SMTPAuthAutoDiscover
		if c.TLS == "none" {
			// Only reachable for a relay on localhost (Provision refuses
			// others): the password never leaves the machine, so the
			// no-encryption mechanisms, which go-mail otherwise refuses,
			// are allowed here and nowhere else.
			auth = mail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, mail.WithSMTPAuth(auth), mail.WithUsername(c.Username), mail.WithPassword(c.Password))
	}
	client, err := mail.NewClient(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client: %w", err)
	}
	return client, nil
}
