// Package kafka delivers vinequeue batches to Apache Kafka with franz-go.
//
// A Producer owns one franz-go client configured for delivery that a queue can
// retry safely: acks from all in-sync replicas, the idempotent producer, and a
// partitioner that is deterministic by key (Kafka's own murmur2 hashing, as
// kgo.StickyKeyPartitioner(nil) does). Its send functions hand every record
// of a batch to the client with a promise and wait for those promises only:
// they return once the broker acknowledged every record of the batch, or
// with an error naming how many were not, or when their context ends. There
// is no flush per batch, so the sends of several queue Workers are in flight
// together and franz-go packs their records into shared produce requests.
//
// # Produce requests
//
// The idempotent producer keeps one produce request in flight per broker,
// so the records per request are what the client holds when the previous
// answer comes back. The client lingers (DefaultLinger) rather than send a
// request as soon as a record arrives, and the sends cut the linger short
// in two groups that take turns: once the sends that have handed over
// their whole batch since the last such kick are half of the most sends
// the Producer has seen at once (the queue's Workers), or every send is
// waiting for acks and none for an earlier kick's answer. While one group's request is encoded, answered and its
// promises run, the other group hands its records to the client, which
// sends them as soon as the answer comes: the client's work and the
// sends' overlap instead of taking turns on the cores. A request carries
// about half of the Workers' batches, so more Workers (and larger batches)
// mean fuller requests, and the linger delays records only while fewer
// than half of the Workers are busy. Sends hand their records to the
// client one at a time: the client locks its producer and the topic for
// each record, so concurrent handovers would only contend.
// The client learns a new topic's partitions with the first send, whose
// records then wait out the linger.
//
// # Workers
//
// Give a queue that feeds a Producer 32 Workers (vinequeue.Config.Workers;
// its default is 1). A send spends nearly all its time waiting for acks,
// so a Worker costs a parked goroutine and the batch it holds; and since a
// request carries about half of the Workers' batches, requests hold some
// 3,500 records at 8 Workers, 6,000 at 16 and 12,000 at 32 (1,000-record
// batches of 200-byte records), which is as full as franz-go's own requests
// at 8 or more producers only from 32 Workers on. More in flight costs
// memory, not order: a key's batches still go one at a time. Fewer Workers
// suit a broker that is slow per request rather than per record, or a
// tight memory limit (each Worker holds up to BatchSize items).
//
// RecordCodec lets a queue of Records keep a WAL; vinequeue.KeyOf(string(key))
// is the queue key that goes with a record key.
//
// # Errors
//
// The queue retries every error of a SendFunc, up to Config.Retry.MaxAttempts,
// and then hands the batch to OnDrop. This package sorts failures into two
// kinds so that a caller can tell them apart in OnDrop's reason or a log:
//
//   - retryable: timeouts, retries exhausted inside the client, cancelled
//     contexts, network errors, and Kafka error codes Kafka marks retriable
//     (NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, ...). A later attempt can succeed.
//   - fatal: encoding errors, a closed Producer, and Kafka error codes Kafka
//     marks non-retriable (MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED,
//     INVALID_RECORD, ...). These errors wrap ErrFatal: errors.Is(err,
//     ErrFatal), or IsFatal(err), reports them. Retrying them cannot succeed;
//     keep Config.Retry.MaxAttempts low if they are expected, or drop the
//     offending records before they reach the queue.
//
// The underlying franz-go error is wrapped too, so errors.Is(err,
// kerr.MessageTooLarge) and errors.Is(err, kgo.ErrRecordTimeout) work.
//
// # Order and duplicates
//
// Records with the same key go to the same partition, and a queue delivers
// the batches of one key (EnqueueKey) one at a time, in order; each send
// waits for every ack of its batch before returning. Together that keeps the
// per-key order from EnqueueKey to the partition. Use the same key on both
// sides: vinequeue.KeyOf(string(recordKey)) as the queue key.
//
// Delivery is at least once. The idempotent producer removes the duplicates
// of its own internal retries, but when a send fails part way (some records
// acknowledged, others not) and the queue retries the batch, the acknowledged
// records are produced again. A consumer sees each key's records in order,
// where a retry may repeat a run of records already seen before the new ones
// continue (check it as "each record is either the next one or one already
// seen").
//
// Why order survives a partial failure: a record is acknowledged behind a
// failed one of its send only if it entered the client after franz-go gave
// up on the earlier one, since giving up fails every record then buffered
// for the partition. A send takes room for its whole batch before producing
// any of it (MaxBufferedRecords), so handing the batch to the client never
// blocks half way; and with client retries unbounded (kgo.RecordRetries is
// not exposed) franz-go gives up on a retriable error only after
// DeliveryTimeout, at least 1s after the record was buffered, which is far
// longer than buffering a batch takes. When the context ends, the records
// that fail are among those not yet sent, which come after those already sent;
// records refused with a non-retriable error are fatal and never delivered.
// Records of other sends may share a partition and a produce request with a
// send's records; a failure that fails the partition's buffer fails them
// too, and their sends are retried the same way.
//
// # Cancellation
//
// Every wait of a send is bounded by its context: the queue cancels it when
// Stop's context ends, so Stop returns on time even with the brokers gone,
// and what was not acknowledged goes to OnDrop (or stays in the WAL, for the
// next New to replay). When the context ends, the send returns at once with
// a retryable error that wraps the context's, whatever became of its
// records. The client fails records not yet written to a connection when it
// next looks at their partition (before it writes that partition's next
// request, or when an answer or a failure comes back), and only if the first
// record of their produce batch is one whose context ended: a record packed
// behind another send's, or waiting behind a request in flight to a broker
// that is gone, stays buffered and may still be produced. Records whose
// produce request may already have been written are not given up on by the
// client: the idempotent producer must learn their fate to keep its sequence
// numbers, so it retries them until the broker answers (or Close). The send
// does not wait for them; they stay in the client, holding their share of
// MaxBufferedRecords, and may still be acknowledged (at least once: the
// queue may deliver them again).
//
// Such records point at the bytes of the batch's keys, values and headers
// (never at the batch slice, which the queue reuses): the client may read
// those bytes until the records are acknowledged or failed, or the Producer
// is closed. Items the queue decoded from its WAL and records a caller
// builds afresh are never reused, so this matters only to a caller that
// recycles the memory of an item's key or value after enqueueing it.
//
// # Concurrency
//
// A Producer is safe for concurrent use: a queue with several Workers calls
// its send functions from several goroutines. Close it after the queue's Stop
// has returned.
package kafka
