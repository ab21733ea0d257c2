package passwordless

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net"
	netmail "net/mail"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
	"go.uber.org/zap"
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
		conn, err := dialSMTP(ctx, client)
		if err != nil {
			return smtpFailure(e.smtp.Address, err)
		}
		b.client, b.conn = client, conn
	}
	if err := whileLive(ctx, b.conn, func() error { return b.client.SendWithSMTPClient(b.conn, msg) }); err != nil {
		err = smtpFailure(e.smtp.Address, err)
		if errors.Is(err, errTransient) && !errors.Is(err, errBadRecipient) {
			b.Close()
		}
		return err
	}
	return nil
}

// dialSMTP is client.DialToSMTPClientWithContext that gives up when ctx
// ends. go-mail watches ctx only while connecting: a server that accepts
// and then says nothing held a stopping worker, and so a config reload,
// for the whole SMTP timeout. The abandoned dialogue ends at that timeout
// by itself, and its connection is closed then.
func dialSMTP(ctx context.Context, client *mail.Client) (*smtp.Client, error) {
	type dialled struct {
		conn *smtp.Client
		err  error
	}
	done := make(chan dialled, 1)
	go func() {
		conn, err := client.DialToSMTPClientWithContext(ctx)
		done <- dialled{conn, err}
	}()
	select {
	case d := <-done:
		return d.conn, d.err
	case <-ctx.Done():
		go func() {
			if d := <-done; d.err == nil {
				client.CloseWithSMTPClient(d.conn)
			}
		}()
		return nil, ctx.Err()
	}
}

// whileLive runs f, a dialogue on conn, and closes conn if ctx ends
// first, which ends f at once instead of at the SMTP timeout.
func whileLive(ctx context.Context, conn *smtp.Client, f func() error) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	return f()
}

func (b *emailBurst) Close() error {
	if b.conn == nil {
		return nil
	}
	err := b.client.CloseWithSMTPClient(b.conn)
	b.client, b.conn = nil, nil
	return err
}

// smtpFailure classifies what the SMTP server or the network answered. A
// 4xx or 5xx to RCPT TO is about that recipient (greylisting, a full
// mailbox, an unknown address): retried or dropped, the rest of the burst
// goes on. 421 is the server closing the session. Otherwise a 5xx is a
// permanent refusal, and a 4xx, a timeout or a connection that failed is
// transient.
func smtpFailure(addr string, err error) error {
	var se *mail.SendError
	if errors.As(err, &se) {
		// The stage and the reply code only: the server's text, and
		// go-mail's "affected recipients", name the address.
		code := se.ErrorCode()
		desc := fmt.Sprintf("smtp %d while %s", code, se.Reason)
		if esc := se.EnhancedStatusCode(); esc != "" {
			desc += " (" + esc + ")"
		}
		switch {
		case se.Reason == mail.ErrSMTPRcptTo && code >= 500:
			return fmt.Errorf("%w: %s", errBadRecipient, desc)
		case se.Reason == mail.ErrSMTPRcptTo && code >= 400 && code != 421:
			return fmt.Errorf("%w: %w: %s", errBadRecipient, errTransient, desc)
		case code >= 500:
			return fmt.Errorf("sending mail through %s: %s", addr, desc)
		}
		return fmt.Errorf("%w: sending mail through %s: %s", errTransient, addr, desc)
	}
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return fmt.Errorf("sending mail through %s: smtp %d: %w", addr, te.Code, err)
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
		// go-mail's error quotes the address: the log gets none.
		return nil, fmt.Errorf("%w: the address does not parse", errBadRecipient)
	}
	subject := e.subject
	switch {
	case subject != "":
	case data.Site != "":
		subject = message(data.Lang, "email.subject.site", data.Site)
	default:
		subject = message(data.Lang, "email.subject")
	}
	msg.Subject(subject)
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

// EmailConfig configures login by email.
type EmailConfig struct {
	// The From header, e.g. `Example <noreply@example.com>`. Required with smtp.
	From string `json:"from,omitempty"`
	// The Subject header. Default: `Your login code` (`Your login code
	// for <branding name>` when the branding names the site), in the
	// language of the request that asked for the code.
	Subject string `json:"subject,omitempty"`
	// The SMTP server that sends the mail. Without it, messages are
	// written to Caddy's log (for development only).
	SMTP *SMTPConfig `json:"smtp,omitempty"`
	// Write messages to Caddy's log instead of sending them. For
	// development: codes appear in the log.
	Log bool `json:"log,omitempty"`
	// A Go text/template file for the text part; `{code}` or `{{.Code}}`
	// stands for the code, `{{.Minutes}}` for its lifetime, `{{.Purpose}}`
	// is `login` or `verify`. Default: a built-in message.
	TextTemplate string `json:"text_template,omitempty"`
	// A Go html/template file for the HTML part, with the same fields.
	// Default: a built-in message.
	HTMLTemplate string `json:"html_template,omitempty"`
	// The site's address as users reach it, such as
	// `https://example.com`. When set, login emails also carry a sign-in
	// link to the browser sign-in page, `{{.Link}}` in templates. It is
	// configured rather than taken from the request's Host header, which a
	// client chooses: a forged Host would send codes to another site.
	LinkBase string `json:"link_base,omitempty"`
}

// SMTPConfig is an SMTP submission server.
type SMTPConfig struct {
	// host:port of the server.
	Address string `json:"address"`
	// Username for SMTP AUTH; none when empty. Use `{env.SMTP_USER}`.
	Username string `json:"username,omitempty"`
	// Password for SMTP AUTH. Use `{env.SMTP_PASSWORD}`.
	Password string `json:"password,omitempty"`
	// `starttls` (required, the default), `implicit` (TLS from the first
	// byte, usually port 465) or `none` (only for a relay on localhost).
	TLS string `json:"tls,omitempty"`
	// How long connecting and sending may take. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

func (e *EmailConfig) provision(env func(*string), logger *zap.Logger) (*emailSender, error) {
	for _, s := range []*string{&e.From, &e.Subject, &e.TextTemplate, &e.HTMLTemplate, &e.LinkBase} {
		env(s)
	}
	if e.LinkBase != "" {
		u, err := url.Parse(e.LinkBase)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("link_base must be the site's address, like https://example.com, not %q", e.LinkBase)
		}
		e.LinkBase = strings.TrimSuffix(e.LinkBase, "/")
	}
	if strings.ContainsAny(e.Subject, "\r\n") {
		return nil, errors.New("subject must be one line")
	}
	s := &emailSender{from: e.From, subject: e.Subject}
	if e.From != "" {
		if _, err := netmail.ParseAddress(e.From); err != nil {
			return nil, fmt.Errorf("from %q: %v", e.From, err)
		}
	}
	textSrc, htmlSrc := defaultTextTemplate, defaultHTMLTemplate
	if e.TextTemplate != "" {
		b, err := os.ReadFile(e.TextTemplate)
		if err != nil {
			return nil, fmt.Errorf("text_template: %w", err)
		}
		textSrc = string(b)
	}
	if e.HTMLTemplate != "" {
		b, err := os.ReadFile(e.HTMLTemplate)
		if err != nil {
			return nil, fmt.Errorf("html_template: %w", err)
		}
		htmlSrc = string(b)
	}
	var err error
	if s.text, err = parseTextTemplate("text", textSrc); err != nil {
		return nil, fmt.Errorf("text_template: %w", err)
	}
	if s.html, err = parseHTMLTemplate("html", htmlSrc); err != nil {
		return nil, fmt.Errorf("html_template: %w", err)
	}
	// A template that cannot render a code is found now, not at the first login.
	probe := Message{To: "user@example.com", Code: "000000", Purpose: purposeLogin, TTL: time.Minute, Link: "https://example.com/auth/login"}
	if _, err := render(s.text, newTemplateData(probe)); err != nil {
		return nil, fmt.Errorf("text_template: %w", err)
	}
	if _, err := render(s.html, newTemplateData(probe)); err != nil {
		return nil, fmt.Errorf("html_template: %w", err)
	}
	s.log = &logSender{logger: logger, channel: "email", render: s.renderText}
	if e.SMTP != nil && !e.Log {
		c := *e.SMTP
		for _, f := range []*string{&c.Address, &c.Username, &c.Password} {
			env(f)
		}
		if c.TLS == "none" && c.Username != "" && !isLoopback(c.Address) {
			// A password, and then every code, would cross the network in clear.
			return nil, fmt.Errorf("smtp %s: username and password need tls starttls or implicit (tls none is for a relay on localhost)", c.Address)
		}
		s.smtp = &c
	}
	return s, nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (e *EmailConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "from":
			if err := oneArg(d, &e.From); err != nil {
				return err
			}
		case "subject":
			if err := oneArg(d, &e.Subject); err != nil {
				return err
			}
		case "log":
			if d.NextArg() {
				return d.ArgErr()
			}
			e.Log = true
		case "text_template":
			if err := oneArg(d, &e.TextTemplate); err != nil {
				return err
			}
		case "html_template":
			if err := oneArg(d, &e.HTMLTemplate); err != nil {
				return err
			}
		case "link_base":
			if err := oneArg(d, &e.LinkBase); err != nil {
				return err
			}
		case "smtp":
			s := new(SMTPConfig)
			if err := oneArg(d, &s.Address); err != nil {
				return err
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "username":
					if err := oneArg(d, &s.Username); err != nil {
						return err
					}
				case "password":
					if err := oneArg(d, &s.Password); err != nil {
						return err
					}
				case "tls":
					if err := oneArg(d, &s.TLS); err != nil {
						return err
					}
					if err := checkSMTPTLS(s.TLS); err != nil {
						return d.Err(err.Error())
					}
				case "timeout":
					dur, err := durationArg(d)
					if err != nil {
						return err
					}
					s.Timeout = caddy.Duration(dur)
				default:
					return d.Errf("unrecognized smtp subdirective %q", d.Val())
				}
			}
			e.SMTP = s
		default:
			return d.Errf("unrecognized email subdirective %q", d.Val())
		}
	}
	if e.Log && e.SMTP != nil {
		return d.Err("email: choose smtp or log, not both")
	}
	if err := checkSMTPFrom(e); err != nil {
		return d.Err("email: " + err.Error())
	}
	return nil
}

// Probe goes as far as a send does before anything about the recipient:
// greeting, TLS, authentication and MAIL FROM, then RSET. So it meets
// every failure that counts as the server's own, and sends nothing.
func (e *emailSender) Probe(ctx context.Context) error {
	if e.smtp == nil {
		return nil
	}
	client, err := e.client()
	if err != nil {
		return err
	}
	conn, err := dialSMTP(ctx, client)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", e.smtp.Address, err)
	}
	defer client.CloseWithSMTPClient(conn)
	from := e.from
	if a, err := netmail.ParseAddress(e.from); err == nil {
		from = a.Address
	}
	return whileLive(ctx, conn, func() error {
		if err := conn.Mail(from); err != nil {
			return fmt.Errorf("smtp %s refused MAIL FROM: %w", e.smtp.Address, err)
		}
		if err := conn.Reset(); err != nil {
			return fmt.Errorf("smtp %s: %w", e.smtp.Address, err)
		}
		return nil
	})
}

// validate checks what the Caddyfile parser checks too, for JSON configs.
func (e *EmailConfig) validate() error {
	if e.SMTP == nil {
		return nil
	}
	if err := checkSMTPFrom(e); err != nil {
		return err
	}
	return checkSMTPTLS(e.SMTP.TLS)
}

func checkSMTPFrom(e *EmailConfig) error {
	if e.SMTP != nil && e.From == "" {
		return errors.New("smtp needs a from address")
	}
	return nil
}

func checkSMTPTLS(mode string) error {
	switch mode {
	case "", "starttls", "implicit", "none":
		return nil
	}
	return fmt.Errorf("smtp tls must be starttls, implicit or none, not %q", mode)
}

// Interface guards: the outbox and health find these by type assertion, so
// a renamed method would silently turn batching or probing off.
var (
	_ burstSender = (*emailSender)(nil)
	_ prober      = (*emailSender)(nil)
)
