"""The run's stages as functions of their inputs, shared by every backend (albumfix.distributed).

context.py: the run's paths, progress, lock and index (the driver's); outcomes.py: the photo and
run reports, the error classifier, fail/finish/publish; models.py: the models a stage loads from
the settings alone; analyse.py: photos in, face rows out; chunks.py: the canonical batches both
backends cut work into; restore.py: photo tasks in, restored faces and written photos out;
compose.py: one photo's restored faces pasted back (with the guard) and written atomically.
No stage writes the index or calls back into the driver (albumfix/pipeline.py).
"""
