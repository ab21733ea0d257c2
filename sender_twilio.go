package passwordless

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	"go.uber.org/zap"
)

// TwilioConfig sends codes by SMS through Twilio's Messages API.
type TwilioConfig struct {
	// Your Twilio Account SID, `AC…`. Required. Use
	// `{env.TWILIO_ACCOUNT_SID}`.
	AccountSID string `json:"account_sid"`
	// Your Twilio Auth Token. Required. Use `{env.TWILIO_AUTH_TOKEN}`
	// rather than writing it in the config.
	AuthToken string `json:"auth_token"`
	// The Twilio number messages come from, in E.164 form such as
	// `+15551234567`. Give either this or messaging_service_sid, not both.
	From string `json:"from,omitempty"`
	// The SID of a Messaging Service, `MG…`, that picks the sending number
	// from its pool. Give either this or from, not both.
	MessagingServiceSID string `json:"messaging_service_sid,omitempty"`
	// The base URL of the Twilio API. Default: `https://api.twilio.com`.
	// Point it elsewhere for tests or for a relay that speaks the same
	// API: requests keep Twilio's paths (after any path given here) and
	// its basic authentication.
	APIURL string `json:"api_url,omitempty"`
	// How long sending one message may take, connecting included.
	// Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

const (
	defaultTwilioAPIURL  = "https://api.twilio.com"
	defaultTwilioTimeout = 10 * time.Second
)

// twilioRecipientCodes are the Twilio error codes that mean the number
// itself cannot be sent to: the user's input is at fault, not the service,
// so the message is dropped and the channel is not marked failing.
var twilioRecipientCodes = map[int]bool{
	21211: true, // invalid 'To' number
	21214: true, // 'To' number cannot be reached
	21217: true, // phone number does not appear to be valid
	21401: true, // invalid phone number
	21407: true, // this number is not supported
	21408: true, // permission to send to this region is not enabled
	21421: true, // phone number is invalid
	21610: true, // recipient has unsubscribed (STOP)
	21612: true, // 'To' number cannot be reached from the 'From' number
	21614: true, // 'To' number is not a mobile number
}

// twilio-go refuses credentials with anything but letters and digits.
var twilioCredential = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// twilioSender sends one SMS per code through Twilio's Messages API with
// the twilio-go client.
type twilioSender struct {
	accountSID string
	authToken  string
	from       string
	serviceSID string
	apiURL     *url.URL
	timeout    time.Duration
	body       *template.Template
	logger     *zap.Logger
	// transport holds the connection pool shared by every send; each send
	// wraps it in its own twilioTransport.
	transport http.RoundTripper
}

// newTwilioSender checks c and builds a sender. body is the message
// template (see parseTextTemplate). Errors never include the auth token.
func newTwilioSender(c TwilioConfig, body *template.Template, logger *zap.Logger) (*twilioSender, error) {
	if body == nil {
		return nil, errors.New("twilio: no message template")
	}
	if c.AccountSID == "" {
		return nil, errors.New("twilio: account_sid is required")
	}
	if !twilioCredential.MatchString(c.AccountSID) {
		return nil, errors.New("twilio: account_sid must be letters and digits only")
	}
	if c.AuthToken == "" {
		return nil, errors.New("twilio: auth_token is required")
	}
	if !twilioCredential.MatchString(c.AuthToken) {
		return nil, errors.New("twilio: auth_token must be letters and digits only")
	}
	switch {
	case c.From == "" && c.MessagingServiceSID == "":
		return nil, errors.New("twilio: one of from or messaging_service_sid is required")
	case c.From != "" && c.MessagingServiceSID != "":
		return nil, errors.New("twilio: give from or messaging_service_sid, not both")
	}
	apiURL, err := parseTwilioAPIURL(c.APIURL)
	if err != nil {
		return nil, err
	}
	if c.Timeout < 0 {
		return nil, errors.New("twilio: timeout must not be negative")
	}
	timeout := time.Duration(c.Timeout)
	if timeout == 0 {
		timeout = defaultTwilioTimeout
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &twilioSender{
		accountSID: c.AccountSID,
		authToken:  c.AuthToken,
		from:       c.From,
		serviceSID: c.MessagingServiceSID,
		apiURL:     apiURL,
		timeout:    timeout,
		body:       body,
		logger:     logger,
		transport:  tr,
	}, nil
}

func parseTwilioAPIURL(s string) (*url.URL, error) {
	if s == "" {
		s = defaultTwilioAPIURL
	}
	u, err := url.Parse(s)
	if err != nil {
		// Without the URL itself, in case a credential was pasted into it.
		return nil, fmt.Errorf("twilio: api_url is not a valid URL: %w", scrubURLError(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("twilio: api_url %q must be an absolute http or https URL", u.Redacted())
	case u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("twilio: api_url %q has no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("twilio: api_url %q must not carry credentials: use account_sid and auth_token", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("twilio: api_url %q must not have a query or fragment", u.Redacted())
	}
	return u, nil
}

// Send renders the message and creates it with Twilio. A number Twilio
// refuses gives an error wrapping errBadRecipient.
func (s *twilioSender) Send(ctx context.Context, m Message) error {
	text, err := render(s.body, newTemplateData(m))
	if err != nil {
		return fmt.Errorf("rendering SMS template: %w", err)
	}
	if strings.TrimSpace(text) == "" {
		return errors.New("twilio: the SMS template rendered an empty message")
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	// twilio-go builds its requests without a context, so each send has a
	// transport of its own that carries ctx, points the request at api_url
	// and notes what came back.
	tr := &twilioTransport{ctx: ctx, base: s.transport, target: s.apiURL}
	defer tr.closeBodies()
	c := &client.Client{
		Credentials: client.NewCredentials(s.accountSID, s.authToken),
		HTTPClient: &http.Client{
			Transport: tr,
			// Like twilio-go's own client: never follow a redirect.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.SetAccountSid(s.accountSID)
	h := client.NewRequestHandler(c)
	// The host is api_url's alone, whatever TWILIO_EDGE or TWILIO_REGION say.
	h.Edge, h.Region = "", ""
	api := openapi.NewApiService(h)

	params := (&openapi.CreateMessageParams{}).SetTo(m.To).SetBody(text)
	if s.from != "" {
		params.SetFrom(s.from)
	} else {
		params.SetMessagingServiceSid(s.serviceSID)
	}
	msg, err := api.CreateMessage(params)
	status, requestID := tr.result()
	if err != nil {
		if status >= 200 && status < 300 {
			// Twilio took the message but its answer did not decode:
			// the SMS is on its way, so this is not a failed send.
			s.logger.Warn("twilio accepted the message with an unreadable answer",
				zap.Int("http_status", status), zap.String("request_id", requestID), zap.String("error", scrubURLError(err).Error()))
			return nil
		}
		return s.failure(err, status, requestID)
	}
	if status < 200 || status >= 300 {
		s.logger.Error("twilio API answered with an unexpected status",
			zap.Int("http_status", status), zap.String("request_id", requestID))
		return transientIf(status, fmt.Errorf("twilio: unexpected answer (%s)", describeTwilioResponse(status, requestID)))
	}
	fields := []zap.Field{zap.Int("http_status", status), zap.String("request_id", requestID)}
	if msg != nil && msg.Sid != nil {
		fields = append(fields, zap.String("message_sid", *msg.Sid))
	}
	if msg != nil && msg.Status != nil {
		fields = append(fields, zap.String("message_status", *msg.Status))
	}
	s.logger.Debug("twilio accepted the message", fields...)
	return nil
}

// failure turns what twilio-go answered into the error Send returns, and
// logs what the operator needs to look the request up at Twilio. Neither
// carries the auth token, the code or the message body; Twilio's free-text
// message is left out too, as it may repeat the recipient's number.
func (s *twilioSender) failure(err error, status int, requestID string) error {
	var te *client.TwilioRestError
	if errors.As(err, &te) {
		if status == 0 {
			status = te.Status
		}
		fields := []zap.Field{
			zap.Int("twilio_code", te.Code),
			zap.Int("http_status", status),
			zap.String("request_id", requestID),
		}
		if te.MoreInfo != "" {
			fields = append(fields, zap.String("more_info", te.MoreInfo))
		}
		desc := describeTwilioResponse(status, requestID)
		if twilioRecipientCodes[te.Code] {
			s.logger.Info("twilio refused the recipient", fields...)
			return fmt.Errorf("%w: twilio error %d (%s)", errBadRecipient, te.Code, desc)
		}
		if twilioRefusal(status) {
			// Such as 21266, To and From are the same: anyone can ask for
			// a code to the site's own number, so it must not close SMS
			// for everyone. Warn: a wrong From answers so too.
			s.logger.Warn("twilio refused the message", fields...)
			return fmt.Errorf("%w: twilio error %d (%s)", errBadRecipient, te.Code, desc)
		}
		s.logger.Error("twilio API error", fields...)
		return transientIf(status, fmt.Errorf("twilio: API error %d (%s)", te.Code, desc))
	}
	err = scrubURLError(err)
	if twilioRefusal(status) {
		s.logger.Warn("twilio refused the message", zap.Int("http_status", status), zap.String("request_id", requestID))
		return fmt.Errorf("%w: twilio: %s", errBadRecipient, describeTwilioResponse(status, requestID))
	}
	if status != 0 {
		// An answer that is not Twilio's error JSON, such as a proxy's 502.
		// twilio-go's error carries a stack trace: log its text alone.
		s.logger.Error("twilio API error", zap.Int("http_status", status), zap.String("request_id", requestID), zap.String("error", err.Error()))
		return transientIf(status, fmt.Errorf("twilio: %s: %w", describeTwilioResponse(status, requestID), err))
	}
	s.logger.Error("twilio API unreachable", zap.String("api_host", s.apiURL.Host), zap.Error(err))
	return fmt.Errorf("%w: twilio: no answer from %s: %w", errTransient, s.apiURL.Host, err)
}

// twilioRefusal tells the answers about this one message rather than
// about Twilio or the account: every 4xx but 401 and 403 (credentials),
// 404 (the account is unknown: the messages URL is under it) and 429.
func twilioRefusal(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// transientIf marks err transient when status is worth retrying.
func transientIf(status int, err error) error {
	if transientStatus(status) {
		return fmt.Errorf("%w: %w", errTransient, err)
	}
	return err
}

// transientStatus tells the answers worth retrying: too many requests,
// and the server's own failures.
func transientStatus(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// scrubURLError drops the *url.Error wrapper, whose URL is the one
// twilio-go built (api.twilio.com), not the one the request went to.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func describeTwilioResponse(status int, requestID string) string {
	d := fmt.Sprintf("HTTP %d", status)
	if requestID != "" {
		d += ", request " + requestID
	}
	return d
}

// twilioTransport sends twilio-go's requests to api_url under the send's
// context, and keeps the status and Twilio-Request-Id of the answer,
// which twilio-go does not hand back on errors.
type twilioTransport struct {
	ctx    context.Context
	base   http.RoundTripper
	target *url.URL

	mu        sync.Mutex
	status    int
	requestID string
	bodies    []io.Closer
}

func (t *twilioTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(t.ctx)
	r.URL.Scheme = t.target.Scheme
	r.URL.Host = t.target.Host
	r.Host = t.target.Host
	if prefix := strings.TrimSuffix(t.target.Path, "/"); prefix != "" {
		if r.URL.RawPath != "" {
			r.URL.RawPath = strings.TrimSuffix(t.target.EscapedPath(), "/") + r.URL.RawPath
		}
		r.URL.Path = prefix + r.URL.Path
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.status = resp.StatusCode
	t.requestID = resp.Header.Get("Twilio-Request-Id")
	// twilio-go does not close the body of an error answer.
	t.bodies = append(t.bodies, resp.Body)
	t.mu.Unlock()
	return resp, nil
}

func (t *twilioTransport) result() (status int, requestID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status, t.requestID
}

func (t *twilioTransport) closeBodies() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.bodies {
		b.Close()
	}
	t.bodies = nil
}

// Probe reads the Twilio account resource: Twilio answers it only for
// working credentials, and nothing is sent or charged.
func (s *twilioSender) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	u := *s.apiURL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/2010-04-01/Accounts/" + s.accountSID + ".json"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.accountSID, s.authToken)
	client := &http.Client{
		Transport:     s.transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("twilio: no answer from %s: %w", s.apiURL.Host, scrubURLError(err))
	}
	defer res.Body.Close()
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("twilio: the account check answered %s", describeTwilioResponse(res.StatusCode, res.Header.Get("Twilio-Request-Id")))
	}
	return nil
}

// unmarshal reads the twilio block of sms.
func (tc *TwilioConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *string
		switch d.Val() {
		case "account_sid":
			dst = &tc.AccountSID
		case "auth_token":
			dst = &tc.AuthToken
		case "from":
			dst = &tc.From
		case "messaging_service_sid":
			dst = &tc.MessagingServiceSID
		case "api_url":
			dst = &tc.APIURL
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			tc.Timeout = caddy.Duration(dur)
			continue
		default:
			return d.Errf("unrecognized twilio subdirective %q", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return err
		}
	}
	if tc.AccountSID == "" || tc.AuthToken == "" {
		return d.Err("twilio needs account_sid and auth_token")
	}
	if (tc.From == "") == (tc.MessagingServiceSID == "") {
		return d.Err("twilio needs one of from or messaging_service_sid")
	}
	return nil
}

// Interface guards: the outbox and health find these by type assertion, so
// a renamed method would silently turn probing off.
var (
	_ Sender = (*twilioSender)(nil)
	_ prober = (*twilioSender)(nil)
)
