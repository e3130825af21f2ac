"""Speed benchmarks in the paper's units (Table 1 "training speed", section 4.1 data pipeline).

``nmusic bench`` measures, for each model and preset, on one device:

* **training**: kHz of audio consumed per second, ``batch x clip samples / seconds per step``, where
  a step is what the trainer does per batch on the device: log-mel front end, forward, backward and
  optimiser step(s) (cMelGAN: its discriminator steps and the generator step). Median over several
  steps after a warm-up step; peak memory (CUDA allocator, or the process's peak RSS on a CPU);
  model FLOPs per step from ``torch.utils.flop_counter.FlopCounterMode`` (plus the fused RNN kernels
  it does not know, :data:`RNN_FLOPS`), FLOP/s, and on a GPU of known peak (:data:`PEAK_TFLOPS`) the
  achieved fraction of it. The paper code's seconds per step at the same configurations on a
  2-core CPU (:data:`PAPER_CPU_REFERENCE`) give the speed-up.
* **sampling**: seconds of audio generated per second (spectrograms; vocoding not included). MelNet:
  cached sampling against the seed's sampler, which re-runs the network over the prefix once per
  frame, measured in the same run, and against the exact re-run per element (measured when it is
  short, otherwise extrapolated from the per-frame run: it runs ``bins`` forwards where the
  per-frame run runs one). Each method's FLOPs (the model's arithmetic, :func:`melnet_sampling_flops`)
  and their ratio to one cached pass: the most the cached sampler can gain at equal FLOP/s.
  cMelGAN: one generator pass for a batch.
* **data**: decode + resample throughput of ``nmusic prepare`` (hours of audio per minute), batches
  per second from the RAM cache including the log-mel on the device, and the same batches decoded
  from disk clip by clip (the pipeline the paper replaced: its "~50x" loading speed-up).

Everything lands in one JSON file and a printed table (:mod:`.run`); ``quick=True`` is the
seconds-long smoke run of the tests (tiny presets, one timed step, tiny data). How things are
measured is in :mod:`.measure`; each kind of figure has its module (:mod:`.training_speed`,
:mod:`.sampling_speed`, :mod:`.data_speed`).
"""
from .run import format_table, run_bench

__all__ = ["format_table", "run_bench"]
