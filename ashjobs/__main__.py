from ashjobs.cli import main

main()
