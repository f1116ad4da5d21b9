import sys

if len(sys.argv) > 1 and sys.argv[1] == "grade":
    from autograder.grade import main as grade_main

    sys.exit(grade_main(sys.argv[2:]))

from autograder.course import main

sys.exit(main())
