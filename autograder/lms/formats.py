"""Each LMS's layouts: how its download names a person's files, what its grade import reads,
and how its bulk feedback upload finds a person again.

Checked against (2026-12-06):

- Moodle 3.1 to 4.x, mod/assign: "Download all submissions" (``download_submissions`` in
  mod/assign/locallib.php, folders by default since 3.1) puts each participant's files in
  ``<Full name>_<participant id>_assignsubmission_file_/`` (before 3.1, and with "Download
  submissions in folders" off: ``<Full name>_<id>_assignsubmission_file_<file>``); the
  participant id is the assignment's own number for the person (``get_uniqueid_for_user``).
  The grading worksheet (assignfeedback_offline, ``importer.php``) needs the columns
  ``Identifier`` ("Participant <id>"), ``Grade`` and ``Last modified (grade)``, and reads
  ``Feedback comments``; the feedback files' zip (assignfeedback_file, ``importziplib.php``)
  finds the person by the same folder names.
- Canvas (canvas-lms ``ContentZipper``): "Download Submissions" names each file
  ``<sortable name, lower case, letters only>[_late]_<user id>_<file id>_<file name>``
  (without the name under anonymous grading); a file uploaded again under the same name
  becomes ``<name>-1.ipynb``. The gradebook import reads ``Student, ID, SIS User ID,
  SIS Login ID, Section`` then a column per assignment (``<title> (<assignment id>)``);
  "Re-Upload Submissions" takes back files named with the download's prefix.
"""

from __future__ import annotations

import re
import unicodedata

MOODLE, CANVAS = "moodle", "canvas"
LMSES = (MOODLE, CANVAS)

#: FileNameCollectorPlugin's named regular expressions, on a file's path in the download
NAMED_REGEXP = {
    MOODLE: r"^(?P<name>[^/_]+)_(?P<student_id>\d+)_assign(?:submission|feedback)_[a-z]+_/?(?P<file_id>.+)$",
    CANVAS: r"^(?:(?P<name>[^/_]+)_)??(?:(?P<late>late)_)?(?P<student_id>\d+)_(?P<attachment_id>\d+)_(?P<file_id>.+)$",
}

MOODLE_WORKSHEET = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum grade",
                    "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
CANVAS_GRADEBOOK = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def plain(text: str) -> str:
    """Letters and digits only, lower case, without accents: how names are compared."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if c.isalnum() and not unicodedata.combining(c)).lower()


def canvas_keys(name: str) -> set[str]:
    """How Canvas's download may spell a roster name ("Ada Lovelace": lovelaceada, adalovelace)."""
    words = name.split()
    keys = {plain(name)}
    if "," in name:
        last, _, first = name.partition(",")
        keys |= {plain(last + first), plain(first + last)}
    for cut in range(1, len(words)):
        keys.add(plain(" ".join(words[cut:] + words[:cut])))
    return keys


def slug(name: str) -> str:
    """A student id made from a name: ascii letters, digits and hyphens."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "student"
