// Package prometheus exports vinequeue metrics to Prometheus
// (github.com/prometheus/client_golang).
//
// Collector reads a queue's Stats at every scrape and reports its counters
// and gauges; nothing runs between scrapes and the queue is not touched
// otherwise. The queue offers no hook around its Send calls, so the
// batch-size and send-latency histograms come from a wrapper instead:
// InstrumentSend wraps the SendFunc given to the queue and observes each
// call into a SendMetrics, itself a Collector.
//
// The package name matches its directory; import it under another name next
// to client_golang's:
//
//	import (
//		"github.com/prometheus/client_golang/prometheus"
//		vqprom "github.com/vineroute/vinequeue/contrib/prometheus"
//	)
//
// Metric names (namespace "vinequeue" by default):
//
//	counters  enqueued_total delivered_total rejected_total dropped_total
//	          spilled_total replayed_total send_retries_total
//	          corrupt_records_total soft_delays_total blocked_total
//	          batches_total
//	gauges    buffered_items held_bytes memory_level target_batch_size wal_bytes
//	histos    send_batch_size{result} send_duration_seconds{result}
//
// Several queues in one process: give each its own ConstLabels (for example
// {"queue": "events"}) so their series differ.
//
// Collector and SendMetrics are safe for concurrent use; a Collector costs
// one Stats call per scrape.
package prometheus
