package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

// Example queues records by key and produces them to Kafka (here kfake, an
// in-process cluster); a consumer reads them back in per-key order.
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "events"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	producer, err := kafka.NewProducer(kafka.Config{
		Topic:      "events",
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close() // after the queue's Close, which the defer order gives

	q, err := vinequeue.New(vinequeue.Config[kafka.Record]{
		SizeOf: kafka.RecordSize,
		Send:   producer.SendRecords,
		OnDrop: func(batch []kafka.Record, reason error) {
			log.Printf("dropped %d records (fatal: %v): %v", len(batch), kafka.IsFatal(reason), reason)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 3 {
		for _, user := range []string{"alice", "bob"} {
			// The same key for the queue and for Kafka: FIFO end to end.
			rec := kafka.Record{Key: []byte(user), Value: fmt.Appendf(nil, "%s-%d", user, i)}
			err := q.EnqueueKey(vinequeue.KeyOf(user), rec)
			if err != nil {
				log.Fatal(err)
			}
		}
	}
	if err := q.Close(); err != nil { // delivers everything accepted
		log.Fatal(err)
	}

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics("events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	byKey := make(map[string][]string)
	for n := 0; n < 6; {
		fetches := consumer.PollFetches(context.Background())
		fetches.EachRecord(func(r *kgo.Record) {
			byKey[string(r.Key)] = append(byKey[string(r.Key)], string(r.Value))
			n++
		})
	}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		fmt.Println(key, byKey[key])
	}
	// Output:
	// alice [alice-0 alice-1 alice-2]
	// bob [bob-0 bob-1 bob-2]
}

// Order is a caller's type, sent as JSON with its customer as the key.
type Order struct {
	Customer string  `json:"customer"`
	Amount   float64 `json:"amount"`
}

// ExampleSendFuncOf produces a caller's type: encode derives the record key
// from the item, as the queue key given to EnqueueKey is.
func ExampleSendFuncOf() {
	producer, err := kafka.NewProducer(kafka.Config{
		Topic:      "orders",
		ClientOpts: []kgo.Opt{kgo.SeedBrokers("localhost:9092")},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	send := kafka.SendFuncOf(producer, func(o Order) (kafka.Record, error) {
		value, err := json.Marshal(o)
		return kafka.Record{Key: []byte(o.Customer), Value: value}, err
	})
	q, err := vinequeue.New(vinequeue.Config[Order]{Send: send})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	o := Order{Customer: "alice", Amount: 9.5}
	_ = q.EnqueueKey(vinequeue.KeyOf(o.Customer), o)
}
