"""The class loop through the university's LMS (Moodle, Canvas): ``collect`` brings a
download of all submissions into nbgrader's layout, ``export`` writes what the LMS imports
back (the grades, and the feedback files in its bulk upload layout).

- ``archive``: unpacks a download safely (no entry outside the folder, no symlink, a size
  limit, nested zips one level), through nbgrader's ``ExtractorPlugin`` interface;
- ``formats``: each LMS's layouts, with the versions they were checked against;
- ``collect``: the hand-ins to ``submitted/<student>/<assignment>/``, people to stable ids;
- ``export``: the LMS's grade file and feedback zip from ``grades/<assignment>.csv``.

What collect records is in ``ROOT/collected/`` (people.csv, <assignment>.json, and the
hand-ins it replaced, kept aside in kept/).
"""
