package passwordless

import (
	"context"
	"errors"
	htmltemplate "html/template"
	"io"
	"strings"
	"text/template"
	"time"

	"go.uber.org/zap"
)

// Sender delivers a code to an alias. It is all the handler knows of SMTP,
// Twilio or the log.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Message is one code on its way to a person.
type Message struct {
	To      string // the normalised email address or E.164 number
	Code    string
	Purpose string // purposeLogin or purposeVerify
	TTL     time.Duration
	Link    string // a sign-in link, for login emails when link_base is set
	Lang    string // the language to write in; empty is English
	Site    string // the branding name, for the subject and signature
}

// errBadRecipient is what a sender answers when the provider refuses the
// address or number itself: the user's input is wrong, not the service.
// Senders wrap errTransient (outbox.go) around failures worth retrying.
var errBadRecipient = errors.New("recipient refused by provider")

// templateData is what message templates see.
type templateData struct {
	Code    string
	Purpose string
	Minutes int
	To      string
	Link    string
	Lang    string // the language of the request that asked for the code (en, de, pt-BR…)
	Site    string // the site's name (branding name), or empty
}

// T is a built-in message in the message's language: {{.T "email.expires" .Minutes}}.
func (d templateData) T(key string, args ...any) string { return message(d.Lang, key, args...) }

func newTemplateData(m Message) templateData {
	lang := m.Lang
	if lang == "" {
		lang = "en"
	}
	return templateData{Code: m.Code, Purpose: m.Purpose, Minutes: int(m.TTL.Round(time.Minute) / time.Minute), To: m.To, Link: m.Link, Lang: lang, Site: m.Site}
}

// codePlaceholder is the short form users can write in templates and
// messages instead of {{.Code}}.
const codePlaceholder = "{code}"

func expandCodePlaceholder(s string) string {
	return strings.ReplaceAll(s, codePlaceholder, "{{.Code}}")
}

const defaultTextTemplate = `{{if eq .Purpose "verify"}}{{.T "email.verify" .Code}}{{else}}{{.T "email.login" .Code}}{{end}}
{{if .Link}}
{{.T "email.link" .Link}}
{{end}}
{{.T "email.expires" .Minutes}}
{{if .Site}}
{{.Site}}
{{end}}`

const defaultHTMLTemplate = `<!DOCTYPE html>
<html lang="{{.Lang}}"><body style="font-family: sans-serif">
<p>{{if eq .Purpose "verify"}}{{.T "email.html.verify"}}{{else}}{{.T "email.html.login"}}{{end}}</p>
<p style="font-size: 2em; font-weight: bold; letter-spacing: 0.2em">{{.Code}}</p>
{{if .Link}}<p><a href="{{.Link}}">{{.T "email.html.signin"}}</a></p>{{end}}
<p>{{.T "email.expires" .Minutes}}</p>
{{if .Site}}<p>{{.Site}}</p>{{end}}
</body></html>
`

func parseTextTemplate(name, src string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Parse(expandCodePlaceholder(src))
}

func parseHTMLTemplate(name, src string) (*htmltemplate.Template, error) {
	return htmltemplate.New(name).Option("missingkey=error").Parse(expandCodePlaceholder(src))
}

func render(t interface {
	Execute(w io.Writer, data any) error
}, data templateData) (string, error) {
	var b strings.Builder
	err := t.Execute(&b, data)
	return b.String(), err
}

// logSender writes messages to Caddy's log instead of sending them. It is
// for development: it is the one place a code may appear in a log.
type logSender struct {
	logger  *zap.Logger
	channel string
	render  func(Message) (string, error)
}

func (s *logSender) Send(_ context.Context, m Message) error {
	body, err := s.render(m)
	if err != nil {
		return err
	}
	s.logger.Warn("code not sent: log sender is for development only",
		zap.String("channel", s.channel), zap.String("to", m.To), zap.String("purpose", m.Purpose),
		zap.String("code", m.Code), zap.String("message", body))
	return nil
}

// burst is one sender session for several messages in a row.
type burst interface {
	Send(ctx context.Context, m Message) error
	Close() error
}

// burstSender is a Sender that can keep one connection for a burst.
type burstSender interface {
	Sender
	openBurst() burst
}

func openBurst(s Sender) burst {
	if bs, ok := s.(burstSender); ok {
		return bs.openBurst()
	}
	return oneByOne{s}
}

// oneByOne is the burst of a sender that has nothing to keep between
// messages (Twilio keeps its HTTP connections alive by itself).
type oneByOne struct{ Sender }

func (oneByOne) Close() error { return nil }

// prober is a Sender that can check that its provider answers without
// sending anything.
type prober interface {
	Probe(ctx context.Context) error
}

// Interface guards
var _ Sender = (*logSender)(nil)
