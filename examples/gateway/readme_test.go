package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

// readmeQuickstart is the README's first snippet, verbatim (the core's
// TestREADMESnippets checks it), in a function whose return runs its
// deferred Close calls.
func readmeQuickstart(brokers []string, userID string, payload []byte) {
	producer, err := kafka.NewProducer(kafka.Config{
		Topic:      "events",
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close() // runs after q.Close: deferred calls run last in, first out

	q, err := vinequeue.New(vinequeue.Config[kafka.Record]{
		Send:          producer.SendRecords, // returns once Kafka acknowledged every record
		SizeOf:        kafka.RecordSize,     // what a record weighs against the memory limit
		BatchSize:     1000,                 // a batch goes out at 1000 items…
		FlushInterval: 2 * time.Second,      // …or 2s after its oldest item
		Workers:       32,                   // sends in flight: Kafka's mostly wait for acks
	})
	if err != nil {
		log.Fatal(err) // ErrInvalidConfig names the field
	}
	defer q.Close() // delivers everything accepted

	key := []byte(userID)
	// FIFO per key, end to end: the queue key and the Kafka record key agree.
	if err := q.EnqueueKey(kafka.QueueKey(key), kafka.Record{Key: key, Value: payload}); err != nil {
		log.Printf("not accepted: %v", err) // ErrClosed once Stop began; ErrFull at the memory limit
	}
}

// Example_readme runs the README's snippet against an in-process broker and
// reads the record back.
func Example_readme() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "events"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	readmeQuickstart(cluster.ListenAddrs(), "user-42", []byte(`{"clicked":"/cart"}`))

	got, err := consume(context.Background(), cluster.ListenAddrs(), "events", 1, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s\n", got[0].Key, got[0].Value)
	// Output: user-42 {"clicked":"/cart"}
}
