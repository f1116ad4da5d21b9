"""The student's code apart from the verdicts: the sandbox (``sandbox``), the student's
process (``channel``, in the sandbox) and the judge (``judge``, where no student code runs)."""
