package passwordless

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Delivery is queued. A code request stores the code and its message in
// one transaction and answers; workers deliver from the store in the
// background. So a request takes the same time whatever the alias (a
// known one, an unknown one that is never sent to, a demo one) and
// whatever the provider does, and a queued message survives a restart.
const (
	// outboxWorkers is the number of workers per channel and handler.
	outboxWorkers = 2
	// outboxBatch is how many messages a worker claims at once; for email
	// they go over one SMTP connection.
	outboxBatch = 16
	// outboxLease is how long a claim keeps a message from other workers
	// and instances. A worker that died holding it is replaced when it ends.
	outboxLease = 2 * time.Minute
	// outboxPoll is how often an idle worker looks for messages that other
	// instances queued or that are due for a retry.
	outboxPoll = time.Second
	// outboxGather is how long a woken worker lets messages gather, so that
	// a busy queue is claimed and finished in batches, not one by one.
	outboxGather = 2 * time.Millisecond
	// Retries wait retryBase, doubling up to retryMax, while the code lives.
	retryBase = time.Second
	retryMax  = time.Minute
	// failingFor is how long a failed delivery keeps its channel failing,
	// unless a delivery succeeds first.
	failingFor = 30 * time.Second
)

// Transient failures are retried; errBadRecipient and every other error
// are permanent: the message is dropped and its code voided.
var (
	errTransient = errors.New("transient delivery failure")
	// errNotTried marks messages released unsent, at shutdown or when a
	// burst stops early; they are due again at once and count as nothing.
	errNotTried = errors.New("not tried")
)

// outboxStore is what the workers need of the Store.
type outboxStore interface {
	ClaimOutbox(ctx context.Context, queue string, n int, now time.Time, lease time.Duration) ([]OutboxMessage, error)
	LiveCodes(ctx context.Context, ids []string, now time.Time) (map[string]bool, error)
	RetryOutbox(ctx context.Context, id string, next time.Time) error
	FinishOutbox(ctx context.Context, ids []string) error
	DeleteCode(ctx context.Context, id string) error
	PendingMessages(ctx context.Context) (map[AliasKind]int, error)
}

// outbox runs the delivery workers of one handler.
type outbox struct {
	store   outboxStore
	senders map[AliasKind]Sender
	logger  *zap.Logger
	message func(OutboxMessage) Message // what the sender gets for a queued message
	queues  map[AliasKind]string
	wake    map[AliasKind]chan struct{}
	health  map[AliasKind]*channelHealth
	ctx     context.Context
	stop    context.CancelFunc
	workers sync.WaitGroup
}

// newOutbox starts the workers for the senders' channels; queue names the
// queue of a channel.
func newOutbox(store outboxStore, senders map[AliasKind]Sender, logger *zap.Logger, queue func(AliasKind) string, message func(OutboxMessage) Message) *outbox {
	ctx, stop := context.WithCancel(context.Background())
	o := &outbox{store: store, senders: senders, logger: logger, message: message,
		queues: map[AliasKind]string{}, wake: map[AliasKind]chan struct{}{},
		health: map[AliasKind]*channelHealth{}, ctx: ctx, stop: stop}
	for kind := range senders {
		o.queues[kind] = queue(kind)
		o.wake[kind] = make(chan struct{}, 1)
		o.health[kind] = new(channelHealth)
	}
	// The maps are complete before any worker reads them.
	for kind := range senders {
		for range outboxWorkers {
			o.workers.Add(1)
			go o.run(kind)
		}
	}
	o.workers.Add(1)
	go o.gauge()
	return o
}

// failing reports whether kind's recent deliveries fail.
func (o *outbox) failing(kind AliasKind) bool { return o.health[kind].failing() }

// succeeded notes that kind's provider answers again (a probe found it so).
func (o *outbox) succeeded(kind AliasKind) { o.health[kind].succeeded() }

// close stops the workers; a message in flight is released for the next
// worker, here after a restart or on another instance.
func (o *outbox) close() {
	o.stop()
	o.workers.Wait()
}

// outboxQueue names the messages that this handler's configuration sends
// for kind. Handlers with the same prefix and the same message settings
// (sender, templates, link) share a queue: a reload, a restart or another
// instance delivers what this one queued. The transport (server,
// credentials, timeouts) is left out, so a fixed SMTP address still
// delivers what waited for it. No secret goes into the name.
func (p *Passwordless) outboxQueue(kind AliasKind) string {
	id := map[string]any{"prefix": p.Prefix, "channel": kind}
	switch kind {
	case KindEmail:
		e := p.Email
		id["email"] = []string{e.From, e.Subject, e.TextTemplate, e.HTMLTemplate, e.LinkBase}
	case KindMobile:
		id["sms"] = []string{p.SMS.Message}
		if t := p.SMS.Twilio; t != nil {
			id["twilio"] = []string{t.AccountSID, t.From, t.MessagingServiceSID}
		}
	}
	b, _ := json.Marshal(id)
	sum := sha256.Sum256(b)
	return string(kind) + ":" + hex.EncodeToString(sum[:8])
}

// gauge publishes the outbox_pending metric every outboxPoll: the messages
// of every instance, counted in the store.
func (o *outbox) gauge() {
	defer o.workers.Done()
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
		}
		n, err := o.store.PendingMessages(o.ctx)
		if err != nil {
			if o.ctx.Err() == nil {
				o.logger.Warn("counting queued messages", zap.Error(err))
			}
			continue
		}
		for kind := range o.queues {
			setOutboxPending(kind, n[kind])
		}
	}
}

// notify wakes a worker of kind for a message just queued.
func (o *outbox) notify(kind AliasKind) {
	select {
	case o.wake[kind] <- struct{}{}:
	default:
	}
}

func (o *outbox) run(kind AliasKind) {
	defer o.workers.Done()
	poll := time.NewTicker(outboxPoll)
	defer poll.Stop()
	for {
		if n := o.deliverDue(kind); n == outboxBatch {
			continue // there may be more
		}
		select {
		case <-o.ctx.Done():
			return
		case <-o.wake[kind]:
			time.Sleep(outboxGather)
		case <-poll.C:
		}
	}
}

// deliverDue claims the due messages of kind and delivers or drops each;
// it returns how many it claimed.
func (o *outbox) deliverDue(kind AliasKind) int {
	store := o.store
	msgs, err := store.ClaimOutbox(o.ctx, o.queues[kind], outboxBatch, now(), outboxLease)
	if err != nil {
		if o.ctx.Err() == nil {
			o.logger.Error("claiming queued messages", zap.String("channel", string(kind)), zap.Error(err))
		}
		return 0
	}
	if len(msgs) == 0 {
		return 0
	}
	// Bookkeeping finishes even when the workers are stopping.
	ctx := context.WithoutCancel(o.ctx)
	t := now()
	var finished []string
	var candidates []OutboxMessage
	var ids []string
	for _, m := range msgs {
		switch {
		case !m.Deliver:
			o.dropped(m, "not to be sent")
			finished = append(finished, m.ID)
		case !t.Before(m.ExpiresAt):
			o.dropped(m, "expired")
			finished = append(finished, m.ID)
		default:
			candidates = append(candidates, m)
			ids = append(ids, m.ID)
		}
	}
	live, err := store.LiveCodes(ctx, ids, t)
	if err != nil {
		o.logger.Error("reading codes of queued messages", zap.Error(err))
		live = nil // retried below, as if the provider had failed
	}
	var toSend []OutboxMessage
	for _, m := range candidates {
		switch {
		case live == nil:
			if !o.retry(ctx, m, errTransient) {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
		case !live[m.ID]:
			// A newer code replaced it, it was used or it expired:
			// sending it would only confuse.
			o.dropped(m, "superseded")
			finished = append(finished, m.ID)
		default:
			toSend = append(toSend, m)
		}
	}
	finished = append(finished, o.send(ctx, kind, toSend)...)
	if err := store.FinishOutbox(ctx, finished); err != nil {
		o.logger.Error("deleting delivered messages", zap.Error(err))
	}
	return len(msgs)
}

// send delivers msgs in one burst and returns the ids that are done with,
// sent or dropped. After a transient failure the rest of the burst waits
// for the retry: the provider is struggling.
func (o *outbox) send(ctx context.Context, kind AliasKind, msgs []OutboxMessage) (finished []string) {
	if len(msgs) == 0 {
		return nil
	}
	// A burst ends well before the lease, so no other worker can claim
	// a message that is still being sent.
	sendCtx, cancel := context.WithTimeout(o.ctx, outboxLease/2)
	defer cancel()
	b := openBurst(o.senders[kind])
	defer b.Close()
	var stopped error
	for _, m := range msgs {
		if stopped == nil && sendCtx.Err() != nil {
			stopped = errNotTried
		}
		if stopped != nil {
			if !o.retry(ctx, m, stopped) {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
			continue
		}
		start := time.Now()
		err := b.Send(sendCtx, o.message(m))
		switch {
		case err == nil:
			o.sent(m, time.Since(start))
			finished = append(finished, m.ID)
		case o.ctx.Err() != nil:
			// Stopping: not the provider's fault.
			o.retry(ctx, m, errNotTried)
			stopped = errNotTried
		case errors.Is(err, errTransient):
			retried := o.retry(ctx, m, err)
			o.failed(m, err, time.Since(start))
			if !retried {
				o.dropped(m, "expired")
				finished = append(finished, m.ID)
			}
			stopped = err
		default:
			// Permanent: the provider refused this message for good. Its
			// code can never arrive, so nobody may redeem it.
			if err := o.store.DeleteCode(ctx, m.ID); err != nil {
				o.logger.Error("voiding undelivered code", zap.Error(err))
			}
			o.failed(m, err, time.Since(start))
			o.dropped(m, "refused")
			finished = append(finished, m.ID)
		}
	}
	return finished
}

// retry makes m due again: at once when it was not tried, else after a
// back-off that doubles with each attempt. It reports false, changing
// nothing, when that would be past the code's expiry.
func (o *outbox) retry(ctx context.Context, m OutboxMessage, why error) bool {
	next := now()
	if why != errNotTried {
		wait := retryBase << min(max(m.Attempts-1, 0), 16)
		next = next.Add(min(wait, retryMax))
		if !next.Before(m.ExpiresAt) {
			return false
		}
	}
	if err := o.store.RetryOutbox(ctx, m.ID, next); err != nil {
		o.logger.Error("rescheduling a queued message", zap.Error(err))
	}
	return true
}

// sent, failed and dropped are the one place each where a delivery
// outcome is recorded.

// sent records a message the provider accepted.
func (o *outbox) sent(m OutboxMessage, took time.Duration) {
	o.health[m.Channel].succeeded()
	countDelivery(m.Channel, m.Purpose, took, nil)
	o.logger.Debug("code delivered", zap.String("channel", string(m.Channel)), zap.String("purpose", m.Purpose),
		zap.Int("attempt", m.Attempts), zap.Duration("took", took))
}

// failed records a delivery attempt that failed. Errors name the provider's
// error code and never carry the code or a secret. A refused recipient is
// the user's input, not the channel failing.
func (o *outbox) failed(m OutboxMessage, err error, took time.Duration) {
	countDelivery(m.Channel, m.Purpose, took, err)
	level := zap.ErrorLevel
	if errors.Is(err, errBadRecipient) {
		level = zap.InfoLevel
	} else {
		o.health[m.Channel].failed()
	}
	o.logger.Log(level, "delivery failed", zap.String("channel", string(m.Channel)), zap.String("purpose", m.Purpose),
		zap.Int("attempt", m.Attempts), zap.Bool("transient", errors.Is(err, errTransient)),
		zap.Duration("took", took), zap.Error(err))
}

// dropped records a message removed unsent, for reason.
func (o *outbox) dropped(m OutboxMessage, reason string) {
	o.logger.Debug("queued message dropped", zap.String("channel", string(m.Channel)), zap.String("reason", reason),
		zap.Int("attempts", m.Attempts))
}

// message is what the sender gets for a queued message.
func (p *Passwordless) message(m OutboxMessage) Message {
	msg := Message{To: m.To, Code: m.Code, Purpose: m.Purpose, TTL: time.Duration(p.CodeTTL)}
	if m.Channel == KindEmail && m.Purpose == purposeLogin && p.Email.LinkBase != "" {
		// The code rides in the fragment: browsers never send it, so no
		// server or access log sees it, and opening the link only fills
		// the form, so mail scanners that follow links cannot use it up.
		msg.Link = p.Email.LinkBase + p.Prefix + "/login?alias=" + url.QueryEscape(m.To) + "#code=" + m.Code
	}
	return msg
}

// channelHealth tells whether a channel's recent deliveries fail. It is
// kept per instance: every instance's workers meet the same provider.
type channelHealth struct {
	mu          sync.Mutex
	lastFailure time.Time
	lastSuccess time.Time
}

func (h *channelHealth) failed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastFailure = now()
}

func (h *channelHealth) succeeded() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastSuccess = now()
}

// failing is true when the last delivery failed, less than failingFor ago.
// After that the channel is tried again with what new requests queue.
func (h *channelHealth) failing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastFailure.After(h.lastSuccess) && now().Sub(h.lastFailure) < failingFor
}

// deliveryFailing is the answer to every code request for a channel whose
// deliveries are failing, known alias or not, so an outage tells nobody
// which accounts exist. It names no server and no secret.
var deliveryFailing = &apiError{status: http.StatusServiceUnavailable, detail: "The code could not be sent. Please try again later.", retryAfter: failingFor}
