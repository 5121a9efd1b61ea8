package s3_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/s3"
)

// Example writes a queue's batches as gzip-compressed NDJSON objects to an
// S3 bucket (here an in-process fake on 127.0.0.1).
func Example() {
	server := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer server.Close()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	client, err := minio.New(strings.TrimPrefix(server.URL, "http://"), &minio.Options{
		Creds:     credentials.NewStaticV4("key", "secret", ""),
		Region:    "us-east-1",
		Transport: transport,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := client.MakeBucket(ctx, "events", minio.MakeBucketOptions{}); err != nil {
		log.Fatal(err)
	}

	writer, err := s3.New(s3.Config{Client: client, Bucket: "events", Prefix: "2026/", Gzip: true})
	if err != nil {
		log.Fatal(err)
	}
	q, err := vinequeue.New(vinequeue.Config[[]byte]{Send: writer.SendLines})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range []string{`{"id":1}`, `{"id":2}`} {
		if err := q.Enqueue([]byte(e)); err != nil {
			log.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		log.Fatal(err)
	}

	var lines []string
	for obj := range client.ListObjects(ctx, "events", minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			log.Fatal(obj.Err)
		}
		payload := readGzipObject(ctx, client, "events", obj.Key)
		// The name is the SHA-256 of the uncompressed lines: a retried
		// batch lands on the same object instead of a second one.
		if obj.Key != writer.Name(payload) {
			log.Fatalf("object %s is not named after its content", obj.Key)
		}
		lines = append(lines, strings.Fields(string(payload))...)
	}
	slices.Sort(lines)
	fmt.Println(lines)
	// Output:
	// [{"id":1} {"id":2}]
}

func readGzipObject(ctx context.Context, client *minio.Client, bucket, name string) []byte {
	obj, err := client.GetObject(ctx, bucket, name, minio.GetObjectOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer obj.Close()
	zr, err := gzip.NewReader(obj)
	if err != nil {
		log.Fatal(err)
	}
	payload, err := io.ReadAll(zr)
	if err != nil {
		log.Fatal(err)
	}
	return payload
}
