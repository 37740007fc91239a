-- The part of an Immich server's database (v1.136+ table names, v2/v3
-- shapes) that mlserve's Immich mode reads or must leave alone. Columns
-- not used by the listing, upsert or search queries are trimmed, but every
-- table, type, key, foreign key and index that those queries touch has the
-- server's shape (server/src/schema/tables/*.table.ts).
--
-- Tests run this inside a transaction with `SET LOCAL search_path` set to
-- a schema of their own, so names are unqualified.

CREATE TYPE asset_visibility_enum AS ENUM ('archive', 'timeline', 'hidden', 'locked');
CREATE TYPE assets_status_enum AS ENUM ('active', 'trashed', 'deleted');
CREATE TYPE asset_face_source_type AS ENUM ('machine-learning', 'exif', 'manual');

CREATE TABLE system_metadata (
	"key"   character varying PRIMARY KEY,
	"value" jsonb NOT NULL
);

CREATE TABLE "user" (
	"id"    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"email" character varying NOT NULL UNIQUE,
	"name"  character varying NOT NULL DEFAULT ''
);

CREATE TABLE asset (
	"id"               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"deviceAssetId"    character varying NOT NULL,
	"ownerId"          uuid NOT NULL REFERENCES "user" ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"deviceId"         character varying NOT NULL,
	"type"             character varying NOT NULL,
	"originalPath"     character varying NOT NULL,
	"fileCreatedAt"    timestamptz NOT NULL,
	"fileModifiedAt"   timestamptz NOT NULL,
	"isFavorite"       boolean NOT NULL DEFAULT false,
	"checksum"         bytea NOT NULL,
	"originalFileName" character varying NOT NULL,
	"createdAt"        timestamptz NOT NULL DEFAULT now(),
	"updatedAt"        timestamptz NOT NULL DEFAULT now(),
	"deletedAt"        timestamptz,
	"visibility"       asset_visibility_enum NOT NULL DEFAULT 'timeline',
	"status"           assets_status_enum NOT NULL DEFAULT 'active',
	"duplicateId"      uuid
);
CREATE INDEX "asset_ownerId_idx" ON asset ("ownerId");

CREATE TABLE asset_file (
	"id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"assetId"   uuid NOT NULL REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"createdAt" timestamptz NOT NULL DEFAULT now(),
	"updatedAt" timestamptz NOT NULL DEFAULT now(),
	"type"      character varying NOT NULL,
	"path"      character varying NOT NULL,
	CONSTRAINT "asset_file_assetId_type_uq" UNIQUE ("assetId", "type")
);
CREATE INDEX "asset_file_assetId_idx" ON asset_file ("assetId");

CREATE TABLE asset_job_status (
	"assetId"              uuid PRIMARY KEY REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"facesRecognizedAt"    timestamptz,
	"metadataExtractedAt"  timestamptz,
	"duplicatesDetectedAt" timestamptz,
	"previewAt"            timestamptz,
	"thumbnailAt"          timestamptz,
	"ocrAt"                timestamptz
);

CREATE TABLE smart_search (
	"assetId"   uuid PRIMARY KEY REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"embedding" vector(512) NOT NULL
);
ALTER TABLE smart_search ALTER COLUMN "embedding" SET STORAGE EXTERNAL;
CREATE INDEX clip_index ON smart_search USING hnsw (embedding vector_cosine_ops) WITH (ef_construction = 300, m = 16);

-- Owned by the server's face and OCR jobs: Immich mode must never write
-- here. Tests check that these stay exactly as the fixture left them.
CREATE TABLE asset_face (
	"id"             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"assetId"        uuid NOT NULL REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"personId"       uuid,
	"imageWidth"     integer NOT NULL DEFAULT 0,
	"imageHeight"    integer NOT NULL DEFAULT 0,
	"boundingBoxX1"  integer NOT NULL DEFAULT 0,
	"boundingBoxY1"  integer NOT NULL DEFAULT 0,
	"boundingBoxX2"  integer NOT NULL DEFAULT 0,
	"boundingBoxY2"  integer NOT NULL DEFAULT 0,
	"sourceType"     asset_face_source_type NOT NULL DEFAULT 'machine-learning',
	"deletedAt"      timestamptz,
	"updatedAt"      timestamptz NOT NULL DEFAULT now(),
	"isVisible"      boolean NOT NULL DEFAULT true
);

CREATE TABLE face_search (
	"faceId"    uuid PRIMARY KEY REFERENCES asset_face ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"embedding" vector(512) NOT NULL
);

CREATE TABLE asset_ocr (
	"id"        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"assetId"   uuid NOT NULL REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"x1" real NOT NULL, "y1" real NOT NULL, "x2" real NOT NULL, "y2" real NOT NULL,
	"x3" real NOT NULL, "y3" real NOT NULL, "x4" real NOT NULL, "y4" real NOT NULL,
	"boxScore"  real NOT NULL,
	"textScore" real NOT NULL,
	"text"      text NOT NULL,
	"isVisible" boolean NOT NULL DEFAULT true
);

CREATE TABLE ocr_search (
	"assetId" uuid PRIMARY KEY REFERENCES asset ("id") ON UPDATE CASCADE ON DELETE CASCADE,
	"text"    text NOT NULL
);
