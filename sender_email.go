package passwordless

import (
	"context"
	"crypto/tls"
	"fmt"
	htmltemplate "html/template"
	"net"
	"strconv"
	"text/template"
	"time"

	"github.com/wneessen/go-mail"
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
	if e.smtp == nil {
		return e.log.Send(ctx, m)
	}
	data := newTemplateData(m)
	text, err := render(e.text, data)
	if err != nil {
		return fmt.Errorf("rendering text template: %w", err)
	}
	html, err := render(e.html, data)
	if err != nil {
		return fmt.Errorf("rendering HTML template: %w", err)
	}
	msg := mail.NewMsg()
	if err := msg.From(e.from); err != nil {
		return fmt.Errorf("from address: %w", err)
	}
	// The address was validated by the handler; go-mail checks it again
	// and encodes headers itself, so no input reaches a header raw.
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("%w: %v", errBadRecipient, err)
	}
	msg.Subject(e.subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(mail.TypeTextPlain, text)
	msg.AddAlternativeString(mail.TypeTextHTML, html)

	client, err := e.client()
	if err != nil {
		return err
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("sending mail through %s: %w", e.smtp.Address, err)
	}
	return nil
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
