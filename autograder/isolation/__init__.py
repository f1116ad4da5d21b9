"""The student's code apart from the verdicts: the sandbox (``sandbox``), the student's
process (``channel``, in the sandbox), the judge (``judge``, where no student code runs),
and what makes the student's text and markup inert wherever it is shown (``inert``)."""
