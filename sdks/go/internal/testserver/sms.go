package testserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// SMS is one message the server's HTTP courier channel posted, decoded from the body template
// the test configuration sets.
type SMS struct {
	To   string `json:"to"`
	Code string `json:"code"`
	Text string `json:"text"`
}

// SMSInbox stands in for an SMS provider's webhook: a real HTTP server that records every JSON
// POST the courier makes and hands the codes to the test.
type SMSInbox struct {
	server *httptest.Server

	mu       sync.Mutex
	messages []SMS
	taken    map[string]int // per recipient: how many messages Next already returned
	arrived  chan struct{}  // closed and replaced on every message, to wake waiters
}

func newSMSInbox(t testing.TB) *SMSInbox {
	inbox := &SMSInbox{taken: map[string]int{}, arrived: make(chan struct{})}
	inbox.server = httptest.NewServer(http.HandlerFunc(inbox.receive))
	t.Cleanup(inbox.server.Close)
	return inbox
}

// URL is the webhook address for the courier channel.
func (i *SMSInbox) URL() string {
	return i.server.URL + "/sms"
}

func (i *SMSInbox) receive(w http.ResponseWriter, r *http.Request) {
	var message SMS
	if r.Method != http.MethodPost || r.URL.Path != "/sms" {
		http.Error(w, "POST /sms only", http.StatusNotFound)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&message); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	i.mu.Lock()
	i.messages = append(i.messages, message)
	close(i.arrived)
	i.arrived = make(chan struct{})
	i.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"queued"}`))
}

// Messages returns every message received so far, oldest first.
func (i *SMSInbox) Messages() []SMS {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]SMS(nil), i.messages...)
}

// Next waits for the next message to the phone number to (E.164) that Next has not returned
// yet, and fails the test if none arrives in time. The courier delivers from an outbox in the
// background, so the message may come a little after the call that queued it.
func (i *SMSInbox) Next(t testing.TB, to string) SMS {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		i.mu.Lock()
		seen := 0
		for _, message := range i.messages {
			if message.To != to {
				continue
			}
			if seen == i.taken[to] {
				i.taken[to]++
				i.mu.Unlock()
				return message
			}
			seen++
		}
		arrived := i.arrived
		i.mu.Unlock()
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("no SMS to %s reached the webhook stand-in within 15s; received: %+v", to, i.Messages())
		}
	}
}
