#!/bin/sh
# The one-shot `minio-setup` service of docker-compose.yml, run with the MinIO root
# credentials, which no other service holds. Safe to run again.
#
# 1. Creates the bucket, unversioned: a deleted recording must not linger as an old version
#    (the app deletes every version anyway, and its lifecycle rules expire noncurrent ones).
# 2. Creates the audit witness bucket with Object Lock and a default retention in compliance
#    mode: every signed audit checkpoint the app writes there stays, unchangeable, until the
#    retention ends, whoever asks (docs/audit.md). A lock can only be turned on when a bucket
#    is created, so an existing bucket without one is refused.
# 3. Creates the app's own access key with a policy limited to those buckets (on the witness
#    bucket: read and write, never delete), so the app, the init and the scheduler never
#    hold the root credentials.
# `recvault init` (the init service) then applies the bucket's lifecycle rules with the app's key.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${S3_BUCKET:?}" "${S3_ACCESS_KEY:?}" "${S3_SECRET_KEY:?}"
: "${S3_WITNESS_BUCKET:?}" "${S3_WITNESS_RETENTION:?}"
export MC_CONFIG_DIR=/tmp/mc
done_file=/tmp/minio-setup.done
rm -f "$done_file"

mc alias set vault http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "vault/$S3_BUCKET"
mc mb --ignore-existing --with-lock "vault/$S3_WITNESS_BUCKET"
# Refused on a bucket made without a lock; a lock cannot be added to it afterwards.
if ! mc retention set --default COMPLIANCE "$S3_WITNESS_RETENTION" "vault/$S3_WITNESS_BUCKET"; then
    echo "bucket $S3_WITNESS_BUCKET has no Object Lock: remove it or choose another S3_WITNESS_BUCKET" >&2
    exit 1
fi

policy=/tmp/recvault-policy.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "s3:GetBucketLocation",
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
        "s3:GetBucketVersioning",
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration"
      ],
      "Resource": ["arn:aws:s3:::$S3_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": [
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts"
      ],
      "Resource": ["arn:aws:s3:::$S3_BUCKET/*"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
      "Resource": ["arn:aws:s3:::$S3_WITNESS_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject"],
      "Resource": ["arn:aws:s3:::$S3_WITNESS_BUCKET/*"]
    }
  ]
}
JSON
mc admin policy create vault recvault "$policy"
mc admin user add vault "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
# Attaching a policy that is already attached is refused ("already in effect"): that is fine.
if ! output=$(mc admin policy attach vault recvault --user "$S3_ACCESS_KEY" 2>&1); then
    case "$output" in
        *"already in effect"*) ;;
        *)
            echo "$output" >&2
            exit 1
            ;;
    esac
fi
rm -f "$policy"

date -u +%Y-%m-%dT%H:%M:%SZ >"$done_file"
echo "buckets $S3_BUCKET and $S3_WITNESS_BUCKET (locked) and the access key are ready"
