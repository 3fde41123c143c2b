#!/bin/sh
# The one-shot `minio-setup` service of docker-compose.yml, run with the MinIO root
# credentials, which no other service holds. Safe to run again.
#
# 1. Creates the bucket, unversioned: a deleted recording must not linger as an old version
#    (the app deletes every version anyway, and its lifecycle rules expire noncurrent ones).
# 2. Creates the app's own access key with a policy limited to that bucket, so the app, the
#    init and the scheduler never hold the root credentials.
# `recvault init` (the init service) then applies the bucket's lifecycle rules with the app's key.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${S3_BUCKET:?}" "${S3_ACCESS_KEY:?}" "${S3_SECRET_KEY:?}"
export MC_CONFIG_DIR=/tmp/mc
done_file=/tmp/minio-setup.done
rm -f "$done_file"

mc alias set vault http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "vault/$S3_BUCKET"

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
echo "bucket $S3_BUCKET and its access key are ready"
