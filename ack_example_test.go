package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/vineroute/vinequeue"
)

// Example_readmeAck mirrors the README's EnqueueAck snippet: a handler that
// answers 200 only once Send returned nil for the event's batch.
func Example_readmeAck() {
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send:      func(context.Context, [][]byte) error { return nil }, // the broker has it
		BatchSize: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	handler := func(w http.ResponseWriter, r *http.Request) {
		ev := []byte(r.URL.Path)
		switch err := q.EnqueueAck(r.Context(), ev, vinequeue.AckDelivered); {
		case err == nil:
			w.WriteHeader(http.StatusOK) // Send returned nil for ev's batch
		case errors.Is(err, vinequeue.ErrDropped):
			w.WriteHeader(http.StatusBadGateway) // failed for good: OnDrop (and the dead-letter log) has it
		default:
			w.WriteHeader(http.StatusServiceUnavailable) // refused, Stop, or the request's ctx ended
		}
	}
	rec := httptest.NewRecorder()
	handler(rec, httptest.NewRequest(http.MethodPost, "/event", nil))
	fmt.Println(rec.Code)
	// Output: 200
}
