package passwordless

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// SMSConfig configures login by text message.
type SMSConfig struct {
	// Send through Twilio. Without it, messages are written to Caddy's
	// log (for development only).
	Twilio *TwilioConfig `json:"twilio,omitempty"`
	// Write messages to Caddy's log instead of sending them. For
	// development: codes appear in the log.
	Log bool `json:"log,omitempty"`
	// The text of the message, a Go text/template where `{code}` or
	// `{{.Code}}` stands for the code. Default:
	// `Use this code to log in: {code}`.
	Message string `json:"message,omitempty"`
	// Calling codes, such as `+1` or `+44`, that numbers must start with.
	// Others are refused with 400 before anything is sent: SMS pumping
	// fraud aims at expensive destinations. Default: any.
	AllowedCountryCodes []string `json:"allowed_country_codes,omitempty"`
}

// defaultSMSMessage is "Use this code to log in: {code}" in the language
// of the request that asked for the code.
const defaultSMSMessage = `{{.T "sms.login" .Code}}`

var callingCode = regexp.MustCompile(`^\+[1-9][0-9]{0,3}$`)

func (c *SMSConfig) provision(env func(*string), logger *zap.Logger) (Sender, error) {
	for _, cc := range c.AllowedCountryCodes {
		if err := checkCallingCode(cc); err != nil {
			return nil, err
		}
	}
	env(&c.Message)
	msg := c.Message
	if msg == "" {
		msg = defaultSMSMessage
	}
	body, err := parseTextTemplate("sms", msg)
	if err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	probe := Message{To: "+15550000000", Code: "000000", Purpose: purposeLogin, TTL: time.Minute}
	if out, err := render(body, newTemplateData(probe)); err != nil || !strings.Contains(out, probe.Code) {
		return nil, fmt.Errorf("message must contain the code ({code}): %q", msg)
	}
	if c.Twilio == nil || c.Log {
		return &logSender{logger: logger, channel: "sms", render: func(m Message) (string, error) {
			return render(body, newTemplateData(m))
		}}, nil
	}
	// Resolved in a copy: the secrets live in memory only.
	tc := *c.Twilio
	for _, f := range []*string{&tc.AccountSID, &tc.AuthToken, &tc.From, &tc.MessagingServiceSID, &tc.APIURL} {
		env(f)
	}
	if tc.From != "" {
		if _, err := normalizeMobile(tc.From); err != nil {
			return nil, fmt.Errorf("twilio: from must be an E.164 number like +15551234567")
		}
	}
	return newTwilioSender(tc, body, logger)
}

// allowedNumber reports whether a normalised number is in one of the
// allowed calling codes. Calling codes are prefix-free, so a prefix test
// is exact.
func (p *Passwordless) allowedNumber(number string) bool {
	if p.SMS == nil || len(p.SMS.AllowedCountryCodes) == 0 {
		return true
	}
	for _, cc := range p.SMS.AllowedCountryCodes {
		if strings.HasPrefix(number, cc) {
			return true
		}
	}
	return false
}

func (c *SMSConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "log":
			if d.NextArg() {
				return d.ArgErr()
			}
			c.Log = true
		case "message":
			if err := oneArg(d, &c.Message); err != nil {
				return err
			}
		case "allowed_country_codes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if err := checkCallingCode(a); err != nil {
					return d.Err(err.Error())
				}
			}
			c.AllowedCountryCodes = append(c.AllowedCountryCodes, args...)
		case "twilio":
			c.Twilio = new(TwilioConfig)
			if err := c.Twilio.unmarshal(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized sms subdirective %q", d.Val())
		}
	}
	if c.Log && c.Twilio != nil {
		return d.Err("sms: choose twilio or log, not both")
	}
	return nil
}

func checkCallingCode(cc string) error {
	if !callingCode.MatchString(cc) {
		return fmt.Errorf("allowed_country_codes: %q is not a calling code like +1 or +44", cc)
	}
	return nil
}
