module github.com/vineroute/vinequeue

go 1.26.0

require (
	github.com/golang/snappy v1.0.0
	github.com/pierrec/lz4/v4 v4.1.33
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require github.com/stretchr/testify v1.11.1 // indirect
