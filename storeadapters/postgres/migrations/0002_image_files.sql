-- fwupgrader PostgreSQL store, migration 2: image bytes (postgres.Files).
--
-- An image is a header row in image_files (its total size and the chunk
-- size it was written with) and its bytes in image_chunks, in chunks of
-- chunk_size bytes numbered from 0 (the last one may be shorter; an empty
-- image has none). Files.Put writes the header and every chunk in one
-- transaction; removing the header removes the chunks.

CREATE TABLE {{schema}}.image_files (
    key        text COLLATE "C" PRIMARY KEY,
    size       bigint NOT NULL CHECK (size >= 0),
    chunk_size integer NOT NULL CHECK (chunk_size > 0),
    created_at timestamptz NOT NULL
);

CREATE TABLE {{schema}}.image_chunks (
    key  text COLLATE "C" NOT NULL REFERENCES {{schema}}.image_files (key) ON DELETE CASCADE,
    seq  integer NOT NULL CHECK (seq >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (key, seq)
);
-- Firmware is compressed already: stored out of line, uncompressed.
ALTER TABLE {{schema}}.image_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
