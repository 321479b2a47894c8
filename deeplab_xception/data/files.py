"""Which files hold data: image files by extension, the TFRecord shards of a pattern, and
which of them each input pipeline reads.

One list per decoder: `read_image` (OpenCV) reads IMAGE_EXTENSIONS; the tf.data
input pipelines decode with `tf.io.decode_image`, which reads the TF_ ones.
"""

from deeplab_xception.backend import import_tensorflow
from deeplab_xception.errors import UserError

IMAGE_EXTENSIONS = (".bmp", ".jp2", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm",
                    ".tif", ".tiff", ".webp")
TF_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # in the order a dataset folder is searched


def is_image_file(name, extensions=IMAGE_EXTENSIONS):
    return name.lower().endswith(extensions)


def tfrecord_files(pattern):
    """The files matching the glob `pattern` (on any file system TensorFlow reads), sorted."""
    files = sorted(import_tensorflow().io.gfile.glob(pattern)) if pattern else []
    if not files:
        raise UserError(f"{pattern}: no TFRecord files match" if pattern
                        else "no TFRecord file pattern given")
    return files


def shard_files(items, input_context=None, shuffle=False, repeat=False, read=None):
    """This input pipeline's share of `items` (file names, or a tuple of per-file lists) as
    tf.data, each file made into records by `read` (by default the items themselves).

    With at least one file per pipeline each pipeline reads every n-th file; with fewer,
    every pipeline reads them all and keeps every n-th record. `shuffle` reorders the files
    every pass without a seed, so asynchronous workers (which all get pipeline 0) read in
    independent orders; `repeat` makes the files endless before they are read, so an epoch's
    end never drains the reader.
    """
    tf = import_tensorflow()
    count = len(items[0] if isinstance(items, tuple) else items)
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    read = read or (lambda files: files)
    files = tf.data.Dataset.from_tensor_slices(items)
    if count < pipelines:
        return read(files.repeat() if repeat else files).shard(pipelines, index)
    files = files.shard(pipelines, index)
    if shuffle:
        files = files.shuffle(count)
    return read(files.repeat() if repeat else files)


def read_tfrecords(pattern, input_context=None, shuffle=False, repeat=False):
    """This input pipeline's share (see `shard_files`) of the serialized records of the TFRecord
    shards matching `pattern`, read up to 16 files at a time; in a fixed order unless `shuffle`."""
    tf = import_tensorflow()
    files = tfrecord_files(pattern)

    def read(names):
        return names.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(files)),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    return shard_files(files, input_context, shuffle, repeat, read)
