package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config is an S3-compatible bucket.
type S3Config struct {
	// Endpoint is host[:port] (no scheme); Secure picks https.
	Endpoint string
	Secure   bool
	Region   string
	Bucket   string
	// Prefix is prepended to every object name ("lake/notifyd/delivery").
	Prefix string
	// PathStyle addresses the bucket in the path (MinIO, most
	// self-hosted stores) instead of the host name (AWS's default).
	PathStyle bool
	// AccessKey and SecretKey are static credentials; empty: the
	// environment and instance credentials (AWS_ACCESS_KEY_ID, IAM role).
	AccessKey, SecretKey string
	// Transport overrides the HTTP transport (tests, custom CAs).
	Transport http.RoundTripper
}

// S3Target puts exported files into an S3-compatible bucket with minio-go.
// A PutObject is atomic: an object appears whole or not at all, and a
// re-put replaces it.
type S3Target struct {
	c      *minio.Client
	bucket string
	prefix string
}

// NewS3Target builds the client; it does not call the bucket.
func NewS3Target(cfg S3Config) (*S3Target, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("create s3 target: endpoint and bucket are required")
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.IAM{}})
	}
	lookup := minio.BucketLookupDNS
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: cfg.Secure, Region: cfg.Region, BucketLookup: lookup, Transport: cfg.Transport})
	if err != nil {
		return nil, fmt.Errorf("create s3 client: %w", err)
	}
	return &S3Target{c: c, bucket: cfg.Bucket, prefix: strings.Trim(cfg.Prefix, "/")}, nil
}

func (t *S3Target) String() string { return "s3://" + path.Join(t.bucket, t.prefix) }

// Put uploads f as prefix/name.
func (t *S3Target) Put(ctx context.Context, name string, f *os.File, size int64) error {
	key := name
	if t.prefix != "" {
		key = t.prefix + "/" + name
	}
	ct := "application/vnd.apache.parquet"
	if strings.HasSuffix(name, ".json") {
		ct = "application/json"
	}
	if _, err := t.c.PutObject(ctx, t.bucket, key, f, size, minio.PutObjectOptions{ContentType: ct}); err != nil {
		return fmt.Errorf("put s3 object %s: %w", key, err)
	}
	return nil
}
