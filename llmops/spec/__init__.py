"""What a run is: ``TrainingSpec``, its validation, and the sources it is read from (presets, Hugging Face
configs, a live module)."""
