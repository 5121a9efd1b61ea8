package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAttackDeliveryTimeoutWhileConnectionsFail checks what
// Config.DeliveryTimeout's doc says of a record whose produce request was
// written: a connection that fails does not let the client give it up
// (the broker may have written it), so DeliveryTimeout does not end the
// send; only the send's context does. (The doc once said the client gives
// such a record up "when the connection fails".) The broker cuts every
// connection that carries a produce request, for three times
// DeliveryTimeout: the send fails with its context's error, not with
// kgo.ErrRecordTimeout.
func TestAttackDeliveryTimeoutWhileConnectionsFail(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{DeliveryTimeout: time.Second})
	if err := p.SendRecords(context.Background(), []Record{{Key: []byte("warm"), Value: []byte("warm")}}); err != nil {
		t.Fatal(err) // the client knows the topic and the broker
	}
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, errors.New("connection cut"), true // kfake closes the connection
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := p.SendRecords(ctx, []Record{{Key: []byte("k"), Value: []byte("v")}})
	if err == nil {
		t.Fatal("delivered through a broker that cuts every produce connection")
	}
	if errors.Is(err, kgo.ErrRecordTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send = %v; want the context's deadline, the record still in the client (not failed at DeliveryTimeout)", err)
	}
}
